// qv_sm_path: the softmax step of qv_gemm_core (mode 6): a head's scores (the score memory, one row
// per query token, N keys) -> its P codes, written into the activation memory from chunk p_base, a
// run of R codes (W words) a cycle.
//
// The arithmetic of quasar_vit.quantization.intops.softmax (F = 6, EXP_BITS = RECIP_BITS = 16), bit
// for bit, R scores at once:
//   MAX   every row, run by run (R scores a cycle):  mx = the row's maximum
//   SUM   the same runs:  u = clamp(((mx - a) * M + 2**(S-1)) >>> S, 0, 17 * 64),
//         e = EXP2[u mod 64] >> (u >> 6) (0 past 16),  s = sum(e);  then per row
//         inv = (Qa * 2**16 + (s >> 1)) // s in a pipelined restoring divider (a row a cycle);
//         the e go to a ring of E_ROWS rows (the e memory)
//   CODE  beside SUM, a row as soon as its inv is in the table: its e from the ring,
//         code = clamp((e * inv + 2**31) >> 32, 0, hi)
// SUM starts when MAX's pipeline is empty (every mx is in its table).  CODE trails SUM by the
// divider's latency and a row, so the ring never overwrites a row CODE has still to read (E_ROWS >=
// the latency in rows: 64 covers a row of a single run).
// After Q K^T the maxima are known already (max_known): Q K^T updates the table with each token's
// run of scores as it writes them (mx_*), and the step starts with SUM.
// The step holds its configuration from start and runs in the background of the core: Q K^T of the
// next head may run meanwhile, writing the other bank of the score memory and of the maxima (`bank`
// is the one this step reads, `mx_bank` the one Q K^T updates).
// Keys >= N (the last word's padding) take no part, and their codes are 0, so P V may read whole
// chunks.  M, S and Qa arrive as the core's mult, shift and offset.
//
// Pipeline after a read (the memory's data in stage rv): MAX: 1 the run's maximum, 2 the row's.
// SUM: 1 mx - a, 2 * M, 3 + half, 4 >>> S, 5 clamp -> u, 6 EXP2 and u >> 6, 7 e (then into the
// ring), 8 the run's sum, 9 the row's, then DW divider stages, 1 into the table.  CODE (after its own
// read of the ring): 1 e * inv, 2 + half >> 32, 3 clamp -> the word, 4 the write.
module qv_sm_path #(
    parameter R = 8,
    parameter KP = 4,
    parameter W = 2,
    parameter TOK_MAX = 8,
    parameter SCH_MAX = 8,     // the score memory's chunks
    parameter CH_MAX = 8,      // the activation memory's chunks
    parameter A_W = 20,        // score width
    parameter QA_W = 26,       // Qa (unsigned)
    parameter S_W = 27,        // the row sum: N * 2**16 < 2**S_W
    parameter E_ROWS = 64      // the e memory's rows (a ring, a power of two)
) (
    input  wire                          clk,
    input  wire                          rst,
    input  wire                          start,
    input  wire [$clog2(TOK_MAX+1)-1:0]  n_tok,    // N: rows and keys
    input  wire signed [17:0]            mult,
    input  wire [5:0]                    shift,
    input  wire [QA_W-1:0]               recip,
    input  wire [5:0]                    hi,
    input  wire [$clog2(CH_MAX)-1:0]     p_base,
    input  wire                          bank,     // the score memory's (and the maxima's) bank to read
    // the score memory's read port (a token's run of W words, latency 1)
    output reg  [$clog2(TOK_MAX)-1:0]    rd_token,
    output reg  [$clog2(SCH_MAX)-1:0]    rd_chunk,
    output reg                           rd_bank,
    input  wire [W*KP*A_W-1:0]           rd_data,
    // the activation memory's write port
    output reg                           wr_en,
    output reg  [$clog2(TOK_MAX)-1:0]    wr_token,
    output reg  [$clog2(CH_MAX)-1:0]     wr_chunk,
    output reg  [$clog2(W+1)-1:0]        wr_words,
    output reg  [W*KP*6-1:0]             wr_data,
    output reg                           busy,
    // the row maxima from Q K^T: a token's run of scores (first: its first key tile); max_known skips
    // the MAX phase (Q K^T has filled the table)
    input  wire                          max_known,
    input  wire                          mx_en,
    input  wire                          mx_bank,
    input  wire [$clog2(TOK_MAX)-1:0]    mx_token,
    input  wire                          mx_first,
    input  wire signed [A_W-1:0]         mx_run,
    input  wire                          mx_en_b,  // and token mx_token + 1's run (Q K^T's pair cycles; mx_token is even)
    input  wire signed [A_W-1:0]         mx_run_b,
    // a row's inv while idle (for the tests: the row sum's one division)
    input  wire [$clog2(TOK_MAX)-1:0]    dbg_token,
    output wire [QA_W-1:0]               dbg_inv
);
    // the configuration, held from start: the core may run its next step (a Q K^T) meanwhile
    reg [$clog2(TOK_MAX+1)-1:0] c_n_tok;
    reg signed [17:0] c_mult;
    reg [5:0] c_shift, c_hi;
    reg [QA_W-1:0] c_recip;
    reg [$clog2(CH_MAX)-1:0] c_p_base;
    always @(posedge clk)
        if (start) begin
            c_n_tok <= n_tok; c_mult <= mult; c_shift <= shift; c_recip <= recip; c_hi <= hi; c_p_base <= p_base;
            rd_bank <= bank;
        end
    localparam TW = $clog2(TOK_MAX + 1);
    localparam TA = $clog2(TOK_MAX);
    localparam GW = $clog2(SCH_MAX + 1);
    localparam U_MAX = 17 * 64;
    localparam SUM_W = 48;
    localparam DW = QA_W + 17;                 // the dividend's bits: the divider's stages
    localparam EP_W = 17 + QA_W;
    localparam LB = $clog2(R) + 17;            // a run's sum of e

    function [16:0] exp2_rom(input [5:0] f);
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
    endfunction

    // ---- phases: every row's runs, for MAX (unless known) then SUM; CODE beside SUM ----
    localparam IDLE = 3'd0, MAX = 3'd1, WAIT1 = 3'd2, SUM = 3'd3;
    localparam ER = E_ROWS;
    reg [2:0] phase;
    reg [TW-1:0] t;
    reg [GW-1:0] g;
    wire [GW-1:0] n_words = GW'((c_n_tok + KP - 1) / KP);
    wire [GW-1:0] n_runs = GW'((n_words + W - 1) / W);
    reg rd_v, rd_first, rd_last;       // a read issued at the last edge, the row's first / last run
    reg [1:0] rd_ph;                   // 1 MAX, 2 SUM
    reg [TW-1:0] rd_t;
    reg [GW-1:0] rd_g;
    wire max_busy, sum_busy, code_busy;
    reg code_on;                       // CODE has rows to read
    always @(posedge clk) begin
        rd_v <= 1'b0;
        if (rst) begin phase <= IDLE; busy <= 1'b0; end
        else if (start) begin phase <= max_known ? SUM : MAX; busy <= 1'b1; t <= 0; g <= 0; end
        else case (phase)
            MAX, SUM: begin
                rd_token <= TA'(t); rd_chunk <= ($clog2(SCH_MAX))'(g * W);
                rd_v <= 1'b1; rd_first <= g == 0; rd_last <= g == n_runs - 1'b1; rd_t <= t; rd_g <= g;
                rd_ph <= phase == MAX ? 2'd1 : 2'd2;
                if (g == n_runs - 1'b1) begin
                    g <= 0;
                    if (t == c_n_tok - 1'b1) begin
                        t <= 0;
                        phase <= phase == MAX ? WAIT1 : IDLE;
                    end else t <= t + 1'b1;
                end else g <= g + 1'b1;
            end
            WAIT1: if (!max_busy) phase <= SUM;   // every row's maximum is in its table
            default: ;
        endcase
        if (phase == IDLE && !start && !code_on && !code_busy) busy <= 1'b0;
    end

    // ---- the data stage: R scores, and which are keys < N ----
    reg rv_v, rv_first, rv_last;
    reg [1:0] rv_ph;
    reg [TW-1:0] rv_t;
    reg [GW-1:0] rv_g;
    always @(posedge clk) begin
        rv_v <= rd_v; rv_first <= rd_first; rv_last <= rd_last; rv_ph <= rd_ph; rv_t <= rd_t; rv_g <= rd_g;
    end
    reg [R-1:0] rv_ok;
    reg signed [A_W-1:0] a [0:R-1];
    integer i;
    always @(*)
        for (i = 0; i < R; i = i + 1) begin
            a[i] = $signed(rd_data[i*A_W +: A_W]);
            rv_ok[i] = 32'(rv_g) * W * KP + i < 32'(c_n_tok);
        end

    // ---- MAX: the run's maximum, then the row's, into the table ----
    // The row maxima: a table per token parity, row {token >> 1, bank}, so that each has one write
    // port (LUT RAM) and Q K^T's pair cycle (token mx_token, even, and mx_token + 1) updates both.
    // The MAX phase writes a row's maximum into its parity's table; it never runs beside Q K^T
    // (a softmax that finds its own maxima runs alone: rtl.gemm refuses a Q K^T beside it).
    localparam MXD = 2 * ((TOK_MAX + 1) / 2);
    reg signed [A_W-1:0] mx_even [0:MXD-1], mx_odd [0:MXD-1];
    reg m1_v, m1_first, m1_last;
    reg [TW-1:0] m1_t;
    reg signed [A_W-1:0] m1_mx, row_mx;
    reg m2_v;
    // the run's maximum: a comparison tree over the lanes (lane 0 is always a key: a run starts at a key < N)
    wire signed [A_W-1:0] rv_max;
    qv_run_max #(.R(R), .AW(A_W), .STRIDE(A_W)) run_max (.vals(rd_data), .ok(rv_ok), .max(rv_max));
    always @(posedge clk) begin
        m1_v <= rv_v && rv_ph == 2'd1; m1_first <= rv_first; m1_last <= rv_last; m1_t <= rv_t;
        m1_mx <= rv_max;
        m2_v <= m1_v && m1_last;
        if (m1_v) row_mx <= m1_row;
    end
    wire [TA-1:0] m1_tt = TA'(m1_t), rv_tt = TA'(rv_t);
    wire [TA-1:0] qk_row = {mx_token[TA-1:1], mx_bank}, m1_row_a = {m1_tt[TA-1:1], rd_bank};
    wire [TA-1:0] rv_row = {rv_tt[TA-1:1], rd_bank};
    wire signed [A_W-1:0] m1_row = (m1_first || m1_mx > row_mx) ? m1_mx : row_mx;
    wire signed [A_W-1:0] qk_even = mx_even[qk_row], qk_odd = mx_odd[qk_row];
    wire signed [A_W-1:0] rv_mx = rv_tt[0] ? mx_odd[rv_row] : mx_even[rv_row];  // the SUM phase's row
    wire max_wr = m1_v && m1_last;
    wire we_even = max_wr ? !m1_tt[0] : mx_en && (mx_first || mx_run > qk_even);
    wire we_odd = max_wr ? m1_tt[0] : mx_en_b && (mx_first || mx_run_b > qk_odd);
    always @(posedge clk) begin
        if (we_even) mx_even[max_wr ? m1_row_a : qk_row] <= max_wr ? m1_row : mx_run;
        if (we_odd) mx_odd[max_wr ? m1_row_a : qk_row] <= max_wr ? m1_row : mx_run_b;
    end
    assign max_busy = rd_v | rv_v | m1_v;

    // ---- SUM: e of R lanes (7 stages) ----
    reg signed [17:0] m_r;
    reg [5:0] sh_r;
    reg signed [SUM_W-1:0] rnd_r;
    always @(posedge clk) begin
        m_r <= c_mult;
        sh_r <= (c_shift > 6'd47) ? 6'd47 : c_shift;
        rnd_r <= (c_shift > 6'd47 || c_shift == 6'd0) ? {SUM_W{1'b0}} : (SUM_W'(1) << (c_shift - 6'd1));
    end
    localparam ES = 7;  // stages from the data to e
    reg [ES:1] ev, efirst, elast;
    reg [TW-1:0] et [1:ES];
    reg [GW-1:0] eg [1:ES];
    reg [R-1:0] eok [1:ES];
    reg signed [A_W:0] d1 [0:R-1];
    reg signed [A_W+18:0] p2 [0:R-1];
    reg signed [SUM_W-1:0] s3 [0:R-1], s4 [0:R-1];
    reg [10:0] u5 [0:R-1];
    reg [16:0] t6 [0:R-1];
    reg [5:0] k6 [0:R-1];
    reg [16:0] e7 [0:R-1];
    integer s;
    always @(posedge clk) begin
        ev[1] <= rv_v && rv_ph == 2'd2; efirst[1] <= rv_first; elast[1] <= rv_last;
        et[1] <= rv_t; eg[1] <= rv_g; eok[1] <= rv_ok;
        for (s = 2; s <= ES; s = s + 1) begin
            ev[s] <= ev[s-1]; efirst[s] <= efirst[s-1]; elast[s] <= elast[s-1];
            et[s] <= et[s-1]; eg[s] <= eg[s-1]; eok[s] <= eok[s-1];
        end
        for (i = 0; i < R; i = i + 1) begin
            d1[i] <= (A_W+1)'(rv_mx) - (A_W+1)'(a[i]);
            p2[i] <= d1[i] * m_r;
            s3[i] <= SUM_W'(p2[i]) + rnd_r;
            s4[i] <= s3[i] >>> sh_r;
            u5[i] <= (s4[i] < 0) ? 11'd0 : (s4[i] > U_MAX) ? 11'(U_MAX) : s4[i][10:0];
            t6[i] <= exp2_rom(u5[i][5:0]);
            k6[i] <= u5[i][10:6];
            e7[i] <= (k6[i] > 6'd16 || !eok[6][i]) ? 17'd0 : (t6[i] >> k6[i]);
        end
    end

    // ---- SUM: the run's sum, the row's, then the divider ----
    reg n8_v, n8_first, n8_last;
    reg [TW-1:0] n8_t;
    reg [LB-1:0] n8_sum;
    reg [S_W-1:0] row_s;
    reg n9_v;
    reg [TW-1:0] n9_t;
    reg [S_W-1:0] n9_s;
    always @(posedge clk) begin
        n8_v <= ev[ES]; n8_first <= efirst[ES]; n8_last <= elast[ES]; n8_t <= et[ES];
        begin : run_sum
            reg [LB-1:0] acc;
            acc = 0;
            for (i = 0; i < R; i = i + 1) acc = acc + LB'(e7[i]);
            n8_sum <= acc;
        end
        n9_v <= n8_v && n8_last; n9_t <= n8_t;
        if (n8_v) begin
            row_s <= (n8_first ? {S_W{1'b0}} : row_s) + S_W'(n8_sum);
            n9_s <= (n8_first ? {S_W{1'b0}} : row_s) + S_W'(n8_sum);
        end
    end
    // the divider: inv = (Qa * 2**16 + (s >> 1)) // s, one quotient bit a stage (restoring)
    reg [DW:0] dv_v;
    reg [TW-1:0] dv_t [0:DW];
    reg [S_W-1:0] dv_s [0:DW];
    reg [DW-1:0] dv_dd [0:DW];
    reg [S_W-1:0] dv_rem [0:DW];
    reg [DW-1:0] dv_q [0:DW];
    reg [QA_W-1:0] inv_tab [0:TOK_MAX-1];
    integer b;
    always @(posedge clk) begin
        dv_v[0] <= n9_v; dv_t[0] <= n9_t; dv_s[0] <= n9_s;
        dv_dd[0] <= {c_recip, 16'd0} + DW'(n9_s >> 1);
        dv_rem[0] <= 0; dv_q[0] <= 0;
        for (b = 1; b <= DW; b = b + 1) begin : step
            reg [S_W:0] rs;
            rs = {dv_rem[b-1], dv_dd[b-1][DW-1]};
            dv_v[b] <= dv_v[b-1]; dv_t[b] <= dv_t[b-1]; dv_s[b] <= dv_s[b-1];
            dv_dd[b] <= dv_dd[b-1] << 1;
            if (rs >= {1'b0, dv_s[b-1]}) begin
                dv_rem[b] <= S_W'(rs - {1'b0, dv_s[b-1]}); dv_q[b] <= {dv_q[b-1][DW-2:0], 1'b1};
            end else begin
                dv_rem[b] <= rs[S_W-1:0]; dv_q[b] <= {dv_q[b-1][DW-2:0], 1'b0};
            end
        end
        if (dv_v[DW]) inv_tab[TA'(dv_t[DW])] <= dv_q[DW][QA_W-1:0];  // q <= Qa + 1/2 < 2**QA_W
    end
    assign dbg_inv = inv_tab[dbg_token];
    assign sum_busy = max_busy | (|ev) | n8_v | n9_v | (|dv_v);

    // ---- the e memory: SUM's e of the last E_ROWS rows, a run (W words) a write ----
    localparam EW = 17;
    wire [W*KP*EW-1:0] e_run, e_q;
    genvar el;
    generate
        for (el = 0; el < R; el = el + 1) begin : e_lane
            assign e_run[el*EW +: EW] = e7[el];
        end
    endgenerate
    reg [$clog2(ER)-1:0] cr_slot;
    reg [$clog2(SCH_MAX)-1:0] cr_chunk;
    qv_res_mem #(.KP(KP), .W(W), .TOK_MAX(ER), .RCH_MAX(SCH_MAX), .EW(EW), .ALIGNED(1)) emem (
        .clk(clk), .wr_en(ev[ES]), .wr_token(($clog2(ER))'(et[ES] % ER)),
        .wr_chunk(($clog2(SCH_MAX))'(eg[ES] * W)), .wr_words(($clog2(W+1))'(W)), .wr_data(e_run),
        .rd_token(cr_slot), .rd_chunk(cr_chunk), .rd_data(e_q)
    );

    // ---- CODE: a row's runs once its inv is in the table; e * inv, rounded, clamped; written ----
    reg [TW:0] inv_count;              // rows whose inv is in the table
    reg [TW-1:0] ct;
    reg [GW-1:0] cg;
    reg cr_v, cv_v;
    reg [TW-1:0] cr_t, cv_t;
    reg [GW-1:0] cr_g, cv_g;
    always @(posedge clk) begin
        cr_v <= 1'b0;
        if (rst) code_on <= 1'b0;
        else if (start) begin code_on <= 1'b1; ct <= 0; cg <= 0; inv_count <= 0; end
        else begin
            if (dv_v[DW]) inv_count <= inv_count + 1'b1;
            if (code_on && inv_count > (TW+1)'(ct)) begin
                cr_slot <= ($clog2(ER))'(ct % ER); cr_chunk <= ($clog2(SCH_MAX))'(cg * W);
                cr_v <= 1'b1; cr_t <= ct; cr_g <= cg;
                if (cg == n_runs - 1'b1) begin
                    cg <= 0;
                    if (ct == c_n_tok - 1'b1) code_on <= 1'b0;
                    ct <= ct + 1'b1;
                end else cg <= cg + 1'b1;
            end
        end
        cv_v <= cr_v; cv_t <= cr_t; cv_g <= cr_g;  // the ring's data arrives
    end
    reg [R-1:0] cv_ok;
    always @(*) for (i = 0; i < R; i = i + 1) cv_ok[i] = 32'(cv_g) * W * KP + i < 32'(c_n_tok);
    reg c8_v, c9_v, c10_v;
    reg [TW-1:0] c8_t, c9_t, c10_t;
    reg [GW-1:0] c8_g, c9_g, c10_g;
    reg [R-1:0] c8_ok, c9_ok, c10_ok;
    reg [EP_W-1:0] c8_p [0:R-1];
    reg [EP_W-32:0] c9_c [0:R-1];
    reg [W*KP*6-1:0] c10_w;
    always @(posedge clk) begin
        c8_v <= cv_v; c8_t <= cv_t; c8_g <= cv_g; c8_ok <= cv_ok;
        for (i = 0; i < R; i = i + 1) c8_p[i] <= EP_W'(e_q[i*EW +: EW]) * EP_W'(inv_tab[TA'(cv_t)]);
        c9_v <= c8_v; c9_t <= c8_t; c9_g <= c8_g; c9_ok <= c8_ok;
        for (i = 0; i < R; i = i + 1) c9_c[i] <= c8_p[i][EP_W-1:32] + (EP_W-31)'(c8_p[i][31]);
        c10_v <= c9_v; c10_t <= c9_t; c10_g <= c9_g; c10_ok <= c9_ok;
        for (i = 0; i < R; i = i + 1)
            c10_w[i*6 +: 6] <= !c9_ok[i] ? 6'd0 : (c9_c[i] > (EP_W-31)'(c_hi)) ? c_hi : c9_c[i][5:0];
        wr_en <= c10_v && !rst;
        wr_token <= TA'(c10_t);
        wr_chunk <= c_p_base + ($clog2(CH_MAX))'(c10_g * W);
        wr_words <= ($clog2(W+1))'((n_words - c10_g * W < W) ? n_words - c10_g * W : W);
        wr_data <= c10_w;
    end
    assign code_busy = sum_busy | cr_v | cv_v | c8_v | c9_v | c10_v | wr_en;
endmodule
