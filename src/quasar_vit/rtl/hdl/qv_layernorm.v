// qv_layernorm: integer LayerNorm of one row of residual codes, one element per cycle, two passes.
//
// The arithmetic of quasar_vit.quantization.intops.layernorm, bit for bit.  Per row of E residual
// codes r (signed, |r| < 2**19, E <= 1024):
//   s1 = sum(r), s2 = sum(r*r), V = E*s2 - s1*s1 + EPS              (exact, 64 bits, V < 2**62)
//   k  = smallest k >= 0 with (V >> 2k) < 2**10,  RS = RSQRT[V >> 2k] (the 1024-entry ROM)
//   Z  = ((E*r - s1) * RS + 2**(3+k)) >>> (4+k)                        (= round(C * RS / 2**(4+k)))
//   out = clamp((Z * G[c] + Bt[c]) >>> SG, lo, hi)                     (qv_requant)
//
// Protocol (per-row constants e_len, eps, sg, lo, hi stable from the row's first pass-1 element
// to its last pass-2 output):
//   Pass 1 ("stats"): present the E codes on st_r with st_valid (gaps allowed), st_last on the
//     last one.  `busy` rises the cycle after the first element and falls when the row's s1, k and
//     RS are latched: STATS_LAT = 39 clock edges after the edge that took the last element (the
//     sums: 3 stages; E*s2 and s1*s1: 31 cycles of a shift-add multiplier; V, k, the table
//     index, the ROM read and the latch: 5).
//   Pass 2 ("apply"): once `busy` is low, present the same E codes again on ap_r with ap_valid
//     (gaps allowed), each with its channel's gain ap_g = G[c] and offset ap_bt = Bt[c].  The unit
//     gives one code per input, in order, on code/out_valid: out_valid is high after the 9th edge
//     following the edge that took the input (a receiver sampling at edges sees it at the 10th):
//     6 stages to Z, 4 in qv_requant.
//   The next row's pass 1 may start when the last pass-2 output of the row has come out (the
//   stats of a row replace the previous row's when `busy` falls).
//
// Multiplies: r*r (20x20), E*r (11x20), C*RS (32x18: two DSP48E2), Z*G (27x18, in qv_requant):
// plain `*` of registered operands.  The once-per-row E*s2 and s1*s1 are a shift-add multiplier
// (two 64-bit accumulators, one bit per cycle), so no wide multiply sits in a combinational path.
// The ROM is 1024 x 17 bits (one BRAM18), initialised by $readmemh(RSQRT_FILE) with the values of
// intops.rsqrt_table(), 5 hex digits a line.
module qv_layernorm #(
    parameter R_W = 20,                 // residual code width (signed)
    parameter OUT_W = 8,                // output code width (signed)
    parameter SUM_W = 48,               // width of Z*G + Bt (signed), the DSP48E2 P width
    parameter RSQRT_FILE = "rsqrt.hex"  // the table, $readmemh format
) (
    input  wire                     clk,
    input  wire                     rst,
    // per-row constants
    input  wire [10:0]              e_len,   // E, 1..1024
    input  wire [63:0]              eps,     // EPS >= 0
    input  wire [5:0]               sg,      // SG
    input  wire signed [OUT_W-1:0]  lo,
    input  wire signed [OUT_W-1:0]  hi,
    // pass 1
    input  wire                     st_valid,
    input  wire                     st_last,
    input  wire signed [R_W-1:0]    st_r,
    output wire                     busy,
    // pass 2
    input  wire                     ap_valid,
    input  wire signed [R_W-1:0]    ap_r,
    input  wire signed [17:0]       ap_g,
    input  wire signed [SUM_W-1:0]  ap_bt,
    output wire                     out_valid,
    output wire signed [OUT_W-1:0]  code
);
    localparam MUL_CYCLES = 31;  // |s1| < 2**31 and E < 2**11: bits of the shift-add multipliers

    // ---- the table ----------------------------------------------------------------------------
    reg [16:0] rom [0:1023];
    initial $readmemh(RSQRT_FILE, rom);

    // ---- pass 1: the sums ---------------------------------------------------------------------
    reg signed [R_W-1:0] ra, rb;
    reg va, la, vb, lb;
    reg signed [2*R_W-1:0] sqb;
    reg signed [31:0] s1;   // |s1| < 2**29
    reg [63:0] s2;          // s2 < 2**48
    reg first;              // the next element starts a row
    // the once-per-row arithmetic
    localparam S_IDLE = 3'd0, S_LOAD = 3'd1, S_MUL = 3'd2, S_V = 3'd3, S_K = 3'd4, S_IDX = 3'd5,
               S_ROM = 3'd6, S_DONE = 3'd7;
    reg [2:0] state;
    reg [4:0] cnt;
    reg [63:0] p1, p2, mc1, mc2;  // products E*s2, s1*s1 and their shifted multiplicands
    reg [10:0] mp1;
    reg [30:0] mp2;
    reg [63:0] v;
    reg [4:0] kk;
    reg [9:0] idx;
    reg [16:0] rs;
    // the row's results, used by pass 2
    reg signed [31:0] row_s1;
    reg [16:0] row_rs;
    reg [4:0] row_k;

    // k: the number of j in 0..26 with V >> (10 + 2j) nonzero (a thermometer, so it is the count)
    reg [4:0] k_c;
    integer j;
    always @* begin
        k_c = 5'd0;
        for (j = 0; j < 27; j = j + 1)
            if ((v >> (10 + 2 * j)) != 64'd0) k_c = j[4:0] + 5'd1;
    end

    wire [31:0] s1_abs = s1[31] ? 32'd0 - s1 : s1;

    assign busy = va | vb | (state != S_IDLE);

    always @(posedge clk) begin
        if (rst) begin
            va <= 1'b0; vb <= 1'b0; la <= 1'b0; lb <= 1'b0; first <= 1'b1; state <= S_IDLE;
        end else begin
            ra <= st_r; va <= st_valid; la <= st_valid & st_last;
            rb <= ra; vb <= va; lb <= la; sqb <= ra * ra;
            if (vb) begin
                s1 <= (first ? 32'sd0 : s1) + 32'(rb);
                s2 <= (first ? 64'd0 : s2) + 64'($unsigned(sqb));
                first <= lb;
            end
            case (state)
                S_IDLE: if (vb && lb) state <= S_LOAD;
                S_LOAD: begin
                    p1 <= 64'd0; mc1 <= s2; mp1 <= e_len;
                    p2 <= 64'd0; mc2 <= {32'd0, s1_abs}; mp2 <= s1_abs[30:0];
                    cnt <= 5'd0; state <= S_MUL;
                end
                S_MUL: begin
                    if (mp1[0]) p1 <= p1 + mc1;
                    if (mp2[0]) p2 <= p2 + mc2;
                    mc1 <= mc1 << 1; mp1 <= mp1 >> 1;
                    mc2 <= mc2 << 1; mp2 <= mp2 >> 1;
                    cnt <= cnt + 5'd1;
                    if (cnt == 5'(MUL_CYCLES - 1)) state <= S_V;
                end
                S_V: begin v <= p1 - p2 + eps; state <= S_K; end
                S_K: begin kk <= k_c; state <= S_IDX; end
                S_IDX: begin idx <= 10'(v >> {kk, 1'b0}); state <= S_ROM; end
                S_ROM: begin rs <= rom[idx]; state <= S_DONE; end
                S_DONE: begin row_s1 <= s1; row_rs <= rs; row_k <= kk; state <= S_IDLE; end
                default: state <= S_IDLE;
            endcase
        end
    end

    // ---- pass 2: Z, then the per-channel affine map ---------------------------------------------
    reg signed [R_W-1:0] r1;
    reg signed [17:0] g1, g2, g3, g4, g5, g6;
    reg signed [SUM_W-1:0] bt1, bt2, bt3, bt4, bt5, bt6;
    reg a1, a2, a3, a4, a5, a6;
    reg signed [R_W+11:0] er2;   // E * r
    reg signed [31:0] c3;        // C = E*r - s1
    reg signed [49:0] p4;        // C * RS
    reg signed [49:0] q5;        // C * RS + 2**(3+k)
    reg signed [26:0] z6;        // Z, |Z| < 2**18 (|C| <= sqrt(E*V))
    wire signed [11:0] e_s = {1'b0, e_len};
    wire signed [17:0] rs_s = {1'b0, row_rs};
    always @(posedge clk) begin
        r1 <= ap_r; g1 <= ap_g; bt1 <= ap_bt;
        er2 <= e_s * r1; g2 <= g1; bt2 <= bt1;
        c3 <= 32'(er2) - row_s1; g3 <= g2; bt3 <= bt2;
        p4 <= c3 * rs_s; g4 <= g3; bt4 <= bt3;
        q5 <= p4 + (50'sd1 <<< (row_k + 5'd3)); g5 <= g4; bt5 <= bt4;
        z6 <= 27'(q5 >>> (row_k + 5'd4)); g6 <= g5; bt6 <= bt5;
        if (rst) begin
            a1 <= 1'b0; a2 <= 1'b0; a3 <= 1'b0; a4 <= 1'b0; a5 <= 1'b0; a6 <= 1'b0;
        end else begin
            a1 <= ap_valid; a2 <= a1; a3 <= a2; a4 <= a3; a5 <= a4; a6 <= a5;
        end
    end

    qv_requant #(.ACC_W(27), .SUM_W(SUM_W), .OUT_W(OUT_W)) affine (
        .clk(clk), .in_valid(a6), .acc(z6), .mult(g6), .offset(bt6), .shift(sg), .lo(lo), .hi(hi),
        .out_valid(out_valid), .code(code)
    );
endmodule
