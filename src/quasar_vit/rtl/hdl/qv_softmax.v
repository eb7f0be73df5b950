// qv_softmax: the integer softmax of one row of score accumulators, one element per cycle.
//
// The arithmetic of quasar_vit.quantization.intops.softmax with frac_bits F = 6, EXP_BITS = 16,
// RECIP_BITS = 16, bit for bit:
//   mx   = max(a)
//   u    = clamp(((mx - a) * M + 2**(S-1)) >>> S, 0, 17 * 2**6)
//   e    = EXP2[u mod 64] >> (u >> 6)              (0 when u >> 6 > 16)
//   s    = sum(e)
//   inv  = (Qa * 2**16 + (s >> 1)) // s            (one restoring division per row)
//   code = clamp((e * inv + 2**31) >> 32, 0, hi)
// EXP2 is the 64-entry table intops.exp2_table(6), held here as a case-statement ROM (no file).
//
// Protocol: three passes over the row (the scores stay in the caller's buffer and are streamed
// three times, so the unit holds no row buffer).  An element is taken on a cycle with
// in_valid && in_ready; in_last marks the row's last element of each pass.
//   pass 1: a[0..N-1]  -> the row maximum              (N cycles, no output)
//   pass 2: a[0..N-1]  -> u, e, s += e                 (N cycles, no output)
//   then in_ready is low while the pipeline drains and the divider runs: the first pass-3
//   element is taken DIV_WAIT = 11 + DW cycles after the last pass-2 element (DW = QA_W + 17
//   divider steps: 54 cycles for QA_W = 26)
//   pass 3: a[0..N-1]  -> u, e (recomputed), code      (N cycles)
//   Codes leave in order with out_valid (and out_last on the row's last code) 11 cycles after
//   their pass-3 element was taken (10 register stages after the input register); there is no
//   output back-pressure.  Pass 1 of the next row may start on the cycle after pass 3's in_last
//   (the codes of the previous row still drain), so a row takes 3N + DIV_WAIT input cycles.
// Constants (held stable from pass 1 to the last code of the row): mult = M (signed, |M| < 2**17),
// shift = S (1..62), recip = Qa (unsigned, < 2**QA_W; Qa = round(2**16 / s_attn), 2**22 for
// s_attn = 1/63), hi = the largest code.  Limits: |a| < 2**(A_W-1), N * 2**16 < 2**S_W.
//
// Pipeline (one element per cycle): 0 input register | 1 mx - a | 2 product (DSP 22 x 18) |
// 3 + rounding half | 4 arithmetic shift | 5 clamp -> u | 6 EXP2 look-up | 7 shifter -> e |
// 8 e * inv (DSP 17 x QA_W, unsigned; fits a 27 x 18 signed DSP48E2 for QA_W <= 26) / s += e |
// 9 + half, >> 32 | 10 clamp -> code.
module qv_softmax #(
    parameter A_W    = 21,  // score width (signed)
    parameter QA_W   = 26,  // width of recip (unsigned)
    parameter S_W    = 27,  // width of the row sum (N * 2**16 < 2**S_W)
    parameter CODE_W = 8    // code width (unsigned)
) (
    input  wire                    clk,
    input  wire                    rst,        // synchronous
    input  wire                    in_valid,
    input  wire                    in_last,
    output wire                    in_ready,
    input  wire signed [A_W-1:0]   a,
    input  wire signed [17:0]      mult,
    input  wire [5:0]              shift,
    input  wire [QA_W-1:0]         recip,
    input  wire [CODE_W-1:0]       hi,
    output reg                     out_valid,
    output reg                     out_last,
    output reg  [CODE_W-1:0]       code,
    output wire                    busy        // the divider (or the drain before it) is running
);
    localparam F = 6;
    localparam U_MAX = 17 * 64;             // (EXP_BITS + 1) * 2**F
    localparam SUM_W = 48;                  // (mx - a) * M + 2**(S-1): |.| < 2**47 for S <= 47
    localparam P_W = A_W + 1 + 18;          // product width
    localparam DW = QA_W + 17;              // dividend width = divider steps
    localparam EP_W = 17 + QA_W;            // e * inv
    localparam [6:0] DW7 = DW;
    localparam [10:0] U_MAX11 = U_MAX;
    localparam [1:0] PH_P1 = 2'd0, PH_P2 = 2'd1, PH_WAIT = 2'd2, PH_P3 = 2'd3;
    localparam [1:0] DV_IDLE = 2'd0, DV_INIT = 2'd1, DV_RUN = 2'd2, DV_DONE = 2'd3;

    function [16:0] exp2_rom;
        input [5:0] f;
        begin
            case (f)
            6'd0: exp2_rom = 17'd65536; 6'd1: exp2_rom = 17'd64830; 6'd2: exp2_rom = 17'd64132; 6'd3: exp2_rom = 17'd63441;
            6'd4: exp2_rom = 17'd62757; 6'd5: exp2_rom = 17'd62081; 6'd6: exp2_rom = 17'd61413; 6'd7: exp2_rom = 17'd60751;
            6'd8: exp2_rom = 17'd60097; 6'd9: exp2_rom = 17'd59449; 6'd10: exp2_rom = 17'd58809; 6'd11: exp2_rom = 17'd58176;
            6'd12: exp2_rom = 17'd57549; 6'd13: exp2_rom = 17'd56929; 6'd14: exp2_rom = 17'd56316; 6'd15: exp2_rom = 17'd55709;
            6'd16: exp2_rom = 17'd55109; 6'd17: exp2_rom = 17'd54515; 6'd18: exp2_rom = 17'd53928; 6'd19: exp2_rom = 17'd53347;
            6'd20: exp2_rom = 17'd52773; 6'd21: exp2_rom = 17'd52204; 6'd22: exp2_rom = 17'd51642; 6'd23: exp2_rom = 17'd51085;
            6'd24: exp2_rom = 17'd50535; 6'd25: exp2_rom = 17'd49991; 6'd26: exp2_rom = 17'd49452; 6'd27: exp2_rom = 17'd48920;
            6'd28: exp2_rom = 17'd48393; 6'd29: exp2_rom = 17'd47871; 6'd30: exp2_rom = 17'd47356; 6'd31: exp2_rom = 17'd46846;
            6'd32: exp2_rom = 17'd46341; 6'd33: exp2_rom = 17'd45842; 6'd34: exp2_rom = 17'd45348; 6'd35: exp2_rom = 17'd44859;
            6'd36: exp2_rom = 17'd44376; 6'd37: exp2_rom = 17'd43898; 6'd38: exp2_rom = 17'd43425; 6'd39: exp2_rom = 17'd42958;
            6'd40: exp2_rom = 17'd42495; 6'd41: exp2_rom = 17'd42037; 6'd42: exp2_rom = 17'd41584; 6'd43: exp2_rom = 17'd41136;
            6'd44: exp2_rom = 17'd40693; 6'd45: exp2_rom = 17'd40255; 6'd46: exp2_rom = 17'd39821; 6'd47: exp2_rom = 17'd39392;
            6'd48: exp2_rom = 17'd38968; 6'd49: exp2_rom = 17'd38548; 6'd50: exp2_rom = 17'd38133; 6'd51: exp2_rom = 17'd37722;
            6'd52: exp2_rom = 17'd37316; 6'd53: exp2_rom = 17'd36914; 6'd54: exp2_rom = 17'd36516; 6'd55: exp2_rom = 17'd36123;
            6'd56: exp2_rom = 17'd35734; 6'd57: exp2_rom = 17'd35349; 6'd58: exp2_rom = 17'd34968; 6'd59: exp2_rom = 17'd34591;
            6'd60: exp2_rom = 17'd34219; 6'd61: exp2_rom = 17'd33850; 6'd62: exp2_rom = 17'd33486; 6'd63: exp2_rom = 17'd33125;
            default: exp2_rom = 17'd0;
            endcase
        end
    endfunction

    // ---- control ---------------------------------------------------------------------------------
    reg [1:0] phase;
    reg [1:0] dstate;
    assign in_ready = phase != PH_WAIT;
    assign busy = phase == PH_WAIT;
    wire take = in_valid && in_ready;

    // constants, registered (the ports are held stable for the row)
    reg signed [17:0] m_r;
    reg [5:0] sh_r;
    reg signed [SUM_W-1:0] rnd_r;
    reg [QA_W-1:0] qa_r;
    reg [CODE_W-1:0] hi_r;

    // element tags per stage: valid, last, pass 2, pass 3 (bit i = stage i)
    reg [9:0] tv, tl, t2, t3;

    // ---- the element pipeline --------------------------------------------------------------------
    reg signed [A_W-1:0] a0;
    reg signed [A_W-1:0] mx, mx_run;
    reg mx_first;
    reg signed [A_W:0] d1;
    reg signed [P_W-1:0] prod2;
    reg signed [SUM_W-1:0] sum3, sh4;
    reg [10:0] u5;
    reg [16:0] t6;
    reg [4:0] k6;
    reg [16:0] e7;
    reg [EP_W-1:0] p8;
    reg [EP_W-32:0] c9;
    reg [QA_W-1:0] inv;
    reg [S_W-1:0] s_acc;

    wire signed [A_W-1:0] mx_next = (mx_first || a0 > mx_run) ? a0 : mx_run;

    always @(posedge clk) begin
        m_r <= mult;
        sh_r <= (shift > 6'd47) ? 6'd47 : shift;
        rnd_r <= (shift > 6'd47 || shift == 6'd0) ? {SUM_W{1'b0}} : ({{(SUM_W-1){1'b0}}, 1'b1} << (shift - 6'd1));
        qa_r <= recip;
        hi_r <= hi;

        tv <= {tv[8:0], take};
        tl <= {tl[8:0], in_last};
        t2 <= {t2[8:0], phase == PH_P2};
        t3 <= {t3[8:0], phase == PH_P3};

        // 0: input
        a0 <= a;
        // 1: the row maximum (pass 1); mx - a (passes 2, 3)
        if (tv[0] && !t2[0] && !t3[0]) begin
            mx_run <= mx_next;
            mx_first <= tl[0];
            if (tl[0]) mx <= mx_next;
        end
        d1 <= $signed({mx[A_W-1], mx}) - $signed({a0[A_W-1], a0});
        // 2: (mx - a) * M
        prod2 <= d1 * m_r;
        // 3: + 2**(S-1)
        sum3 <= SUM_W'(prod2) + rnd_r;
        // 4: >>> S (S > 47 is 47: |product| < 2**40 makes both 0 or -1, clamped to 0)
        sh4 <= sum3 >>> sh_r;
        // 5: clamp -> u
        if (sh4 < 0) u5 <= 11'd0;
        else if (sh4 > U_MAX) u5 <= U_MAX11;
        else u5 <= sh4[10:0];
        // 6: table
        t6 <= exp2_rom(u5[F-1:0]);
        k6 <= u5[10:F];
        // 7: shifter -> e
        e7 <= (k6 > 5'd16) ? 17'd0 : (t6 >> k6);
        // 8: e * inv
        p8 <= e7 * inv;
        // 9: + 2**31, >> 32
        c9 <= p8[EP_W-1:32] + {{(EP_W-32){1'b0}}, p8[31]};
        // 10: clamp -> code
        code <= (c9 > {{(EP_W-31-CODE_W){1'b0}}, hi_r}) ? hi_r : c9[CODE_W-1:0];
        out_last <= tl[9];

        if (rst) begin
            tv <= 10'd0;
            mx_first <= 1'b1;
            out_valid <= 1'b0;
        end else begin
            out_valid <= tv[9] && t3[9];
        end
    end

    // ---- the row sum and the divider -------------------------------------------------------------
    reg [S_W-1:0] dv_s;
    reg [DW-1:0] dd;
    reg [DW-1:0] q;
    reg [S_W-1:0] rem;
    reg [6:0] cnt;
    wire [S_W:0] rs = {rem, dd[DW-1]};
    wire ge = rs >= {1'b0, dv_s};
    wire [S_W:0] rs_sub = rs - {1'b0, dv_s};

    always @(posedge clk) begin
        if (rst) begin
            phase <= PH_P1;
            dstate <= DV_IDLE;
            s_acc <= {S_W{1'b0}};
        end else begin
            if (take && in_last) begin
                case (phase)
                    PH_P1: phase <= PH_P2;
                    PH_P2: phase <= PH_WAIT;
                    PH_P3: phase <= PH_P1;
                    default: phase <= phase;
                endcase
            end
            // 8: s += e (pass 2); the row's last e starts the division
            if (tv[7] && t2[7]) begin
                if (tl[7]) begin
                    dv_s <= s_acc + {{(S_W-17){1'b0}}, e7};
                    s_acc <= {S_W{1'b0}};
                    dstate <= DV_INIT;
                end else begin
                    s_acc <= s_acc + {{(S_W-17){1'b0}}, e7};
                end
            end
            case (dstate)
                DV_INIT: begin
                    dd <= {qa_r, 16'd0} + {{(DW-S_W+1){1'b0}}, dv_s[S_W-1:1]};
                    rem <= {S_W{1'b0}};
                    cnt <= DW7;
                    dstate <= DV_RUN;
                end
                DV_RUN: begin
                    rem <= ge ? rs_sub[S_W-1:0] : rs[S_W-1:0];
                    q <= {q[DW-2:0], ge};
                    dd <= {dd[DW-2:0], 1'b0};
                    cnt <= cnt - 7'd1;
                    if (cnt == 7'd1) dstate <= DV_DONE;
                end
                DV_DONE: begin
                    inv <= q[QA_W-1:0];  // q <= Qa + 1/2 < 2**QA_W
                    phase <= PH_P3;
                    dstate <= DV_IDLE;
                end
                default: ;
            endcase
        end
    end
endmodule
