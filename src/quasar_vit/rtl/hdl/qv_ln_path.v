// qv_ln_path: a LayerNorm step of qv_gemm_core (mode 3): the residual memory's rows -> the
// normalised values Z of R channels of a token a cycle, which the core's output lanes turn into
// codes with the channels' gain and offset (the requantiser (Z * G + Bt) >>> SG).
//
// The arithmetic of quasar_vit.quantization.intops.layernorm, bit for bit:
//   stats  (a run of R codes a cycle, E / R cycles a token):  s1 = sum r, s2 = sum r^2
//   prep   (a token a cycle, 6 stages):  V = E*s2 - s1^2 + EPS,  k = the smallest k with
//          V >> 2k < 2**10,  RS = RSQRT[V >> 2k]  (the rsqrt ROM, $readmemh(RSQRT_FILE))
//   apply  (R channels of a token a cycle):  Z = ((E*r - s1) * RS + 2**(3+k)) >>> (4+k)
// Order: the stats of every token, then for each row tile of R channels (its gains and offsets in
// one half of the weight buffer: a constants-only row tile) every token's Z.  The half is freed when
// the tile's last token has been handed to the lanes.
module qv_ln_path #(
    parameter R = 8,
    parameter KP = 4,
    parameter W = 2,
    parameter TOK_MAX = 8,
    parameter RCH_MAX = 8,
    parameter RES_W = 20,
    parameter Z_W = 22,
    parameter RSQRT_FILE = "rsqrt.hex"
) (
    input  wire                          clk,
    input  wire                          rst,
    input  wire                          start,
    input  wire [$clog2(TOK_MAX+1)-1:0]  n_tok,
    input  wire [10:0]                   e_len,    // E
    input  wire [63:0]                   eps,
    input  wire [$clog2(RCH_MAX)-1:0]    r_base,
    // the residual memory's read port (a token's run of W words, 1 cycle)
    output reg  [$clog2(TOK_MAX)-1:0]    rd_token,
    output reg  [$clog2(RCH_MAX)-1:0]    rd_chunk,
    input  wire [W*KP*RES_W-1:0]         rd_data,
    // the weight buffer
    input  wire [15:0]                   w_loaded,   // row tiles in the weight buffer since start
    output reg                           rel_en,
    output reg                           rel_half,
    // to the output lanes
    output reg                           z_valid,
    output reg  [$clog2(TOK_MAX+1)-1:0]  z_token,
    output reg                           z_half,
    output reg  [R*Z_W-1:0]              z_vals,
    output reg                           busy
);
    localparam TW = $clog2(TOK_MAX + 1);
    localparam GW = $clog2(RCH_MAX / W + 1);
    reg [16:0] rom [0:1023];
    initial $readmemh(RSQRT_FILE, rom);
    wire [GW-1:0] groups = GW'(e_len / R);  // row tiles (runs of R channels)

    // ---- phase control ----
    localparam IDLE = 2'd0, STATS = 2'd1, WAIT = 2'd2, APPLY = 2'd3;
    reg [1:0] phase;
    reg [TW-1:0] t;          // the token being read
    reg [GW-1:0] g;          // the run (row tile) being read
    reg rd_v, rd_last;       // a read issued at the last edge; the token's last run
    reg [TW-1:0] rd_t;
    wire prep_busy;          // statistics or prep still in flight
    reg rd_h, rd_rel, rd_ap; // the row tile's half of the read; the tile's last read; an apply read
    reg rv_rel, rv_ap, a1_rel, a2_rel, a3_rel;
    reg rv_v, rv_last, rv_h; // ... and one cycle later, with the memory's data
    reg [TW-1:0] rv_t;
    wire z_pipe_busy;
    always @(posedge clk) begin
        rd_v <= 1'b0; rd_rel <= 1'b0;
        if (rst) begin phase <= IDLE; busy <= 1'b0; end
        else if (start) begin phase <= STATS; busy <= 1'b1; t <= 0; g <= 0; end
        else case (phase)
            STATS: begin
                rd_token <= t[$clog2(TOK_MAX)-1:0]; rd_chunk <= r_base + ($clog2(RCH_MAX))'(g * W);
                rd_v <= 1'b1; rd_last <= g == groups - 1'b1; rd_t <= t; rd_ap <= 1'b0;
                if (g == groups - 1'b1) begin
                    g <= 0;
                    if (t == n_tok - 1'b1) begin t <= 0; phase <= WAIT; end
                    else t <= t + 1'b1;
                end else g <= g + 1'b1;
            end
            WAIT: if (!prep_busy) phase <= APPLY;  // every token's prep is in the table
            APPLY: if (w_loaded > 16'(g)) begin
                rd_token <= t[$clog2(TOK_MAX)-1:0]; rd_chunk <= r_base + ($clog2(RCH_MAX))'(g * W);
                rd_v <= 1'b1; rd_t <= t; rd_h <= g[0]; rd_ap <= 1'b1;
                if (t == n_tok - 1'b1) begin
                    t <= 0;
                    rd_rel <= 1'b1;  // frees the half once this token's Z has gone to the lanes
                    if (g == groups - 1'b1) phase <= IDLE;
                    g <= g + 1'b1;
                end else t <= t + 1'b1;
            end
            default: ;
        endcase
        if (phase == IDLE && !start && !z_pipe_busy) busy <= 1'b0;
        rv_v <= rd_v; rv_last <= rd_last; rv_t <= rd_t; rv_h <= rd_h; rv_rel <= rd_rel; rv_ap <= rd_ap;
    end

    // ---- stats: the run's sum and sum of squares, accumulated per token ----
    reg signed [RES_W-1:0] rv [0:R-1];
    integer i;
    always @(*) for (i = 0; i < R; i = i + 1) rv[i] = $signed(rd_data[i*RES_W +: RES_W]);
    reg st_v, st_last;
    reg [TW-1:0] st_t;
    reg signed [RES_W+7:0] run_s1;
    reg [2*RES_W+7:0] run_s2;
    reg signed [RES_W+10:0] s1_acc;
    reg [2*RES_W+10:0] s2_acc;
    reg pr_v;
    reg [TW-1:0] pr_t;
    reg signed [RES_W+10:0] pr_s1;
    reg [2*RES_W+10:0] pr_s2;
    always @(posedge clk) begin
        // stage 1: the run's sums (the read data arrived this cycle; widened before the products)
        st_v <= rv_v && !rv_ap; st_last <= rv_last; st_t <= rv_t;
        begin : sums
            reg signed [RES_W+7:0] a;
            reg [2*RES_W+7:0] b;
            a = 0; b = 0;
            for (i = 0; i < R; i = i + 1) begin
                a = a + (RES_W+8)'(rv[i]);
                b = b + (2*RES_W+8)'((2*RES_W)'(rv[i]) * (2*RES_W)'(rv[i]));
            end
            run_s1 <= a; run_s2 <= b;
        end
        // stage 2: the token's totals
        pr_v <= 1'b0;
        if (st_v) begin
            if (st_last) begin
                pr_v <= 1'b1; pr_t <= st_t;
                pr_s1 <= s1_acc + (RES_W+11)'(run_s1); pr_s2 <= s2_acc + (2*RES_W+11)'(run_s2);
                s1_acc <= 0; s2_acc <= 0;
            end else begin
                s1_acc <= s1_acc + (RES_W+11)'(run_s1); s2_acc <= s2_acc + (2*RES_W+11)'(run_s2);
            end
        end
        if (start) begin s1_acc <= 0; s2_acc <= 0; end
    end

    // ---- prep: V, k, RS per token (5 stages), into the token table ----
    reg p1_v, p2_v, p3_v, p4_v, p5_v;
    reg [TW-1:0] p1_t, p2_t, p3_t, p4_t, p5_t;
    reg signed [RES_W+10:0] p1_s1, p2_s1, p3_s1, p4_s1, p5_s1;
    reg [63:0] p1_es2, p1_s1s1, p2_v64, p3_v64;
    reg [4:0] p3_k, p4_k, p5_k;
    reg [9:0] p4_idx;
    reg signed [RES_W+10:0] tt_s1 [0:TOK_MAX-1];
    reg [4:0] tt_k [0:TOK_MAX-1];
    reg [16:0] tt_rs [0:TOK_MAX-1];
    function automatic [4:0] norm_k(input [63:0] v);
        integer b, kk;
        begin
            norm_k = 0;
            for (b = 0; b < 64; b = b + 1)
                if (v[b]) begin
                    kk = (b + 1 - 10 + 1) / 2;   // bit length b+1: the smallest k with (b+1) - 2k <= 10
                    norm_k = (b + 1 > 10) ? 5'(kk) : 5'd0;
                end
        end
    endfunction
    wire signed [63:0] s1x = 64'(pr_s1);
    always @(posedge clk) begin
        p1_v <= pr_v; p1_t <= pr_t; p1_s1 <= pr_s1;
        p1_es2 <= 64'(pr_s2) * 64'(e_len);
        p1_s1s1 <= s1x * s1x;
        p2_v <= p1_v; p2_t <= p1_t; p2_s1 <= p1_s1;
        p2_v64 <= p1_es2 - p1_s1s1 + eps;
        p3_v <= p2_v; p3_t <= p2_t; p3_s1 <= p2_s1;
        p3_v64 <= p2_v64;
        p3_k <= norm_k(p2_v64);                       // the normalising shift ...
        p4_v <= p3_v; p4_t <= p3_t; p4_s1 <= p3_s1; p4_k <= p3_k;
        p4_idx <= 10'(p3_v64 >> (2 * p3_k));          // ... then the table index
        p5_v <= p4_v; p5_t <= p4_t; p5_s1 <= p4_s1; p5_k <= p4_k;
        if (p5_v) begin
            tt_s1[p5_t[$clog2(TOK_MAX)-1:0]] <= p5_s1;
            tt_k[p5_t[$clog2(TOK_MAX)-1:0]] <= p5_k;
            tt_rs[p5_t[$clog2(TOK_MAX)-1:0]] <= p5_rs;
        end
    end
    reg [16:0] p5_rs;
    always @(posedge clk) p5_rs <= rom[p4_idx];

    // ---- apply: Z of the run's R channels (4 stages after the read) ----
    reg a1_v, a2_v, a3_v;
    reg [TW-1:0] a1_t, a2_t, a3_t;
    reg a1_h, a2_h, a3_h;
    reg signed [RES_W+10:0] a1_s1;
    reg [4:0] a1_k, a2_k, a3_k;
    reg [16:0] a1_rs, a2_rs;
    reg signed [RES_W-1:0] a1_r [0:R-1];
    reg signed [RES_W+12:0] a2_c [0:R-1];
    reg signed [RES_W+31:0] a3_p [0:R-1];
    always @(posedge clk) begin
        a1_v <= rv_v && rv_ap; a1_t <= rv_t; a1_h <= rv_h; a1_rel <= rv_rel;
        a1_s1 <= tt_s1[rv_t[$clog2(TOK_MAX)-1:0]];
        a1_k <= tt_k[rv_t[$clog2(TOK_MAX)-1:0]];
        a1_rs <= tt_rs[rv_t[$clog2(TOK_MAX)-1:0]];
        for (i = 0; i < R; i = i + 1) a1_r[i] <= rv[i];
        a2_v <= a1_v; a2_t <= a1_t; a2_h <= a1_h; a2_k <= a1_k; a2_rs <= a1_rs; a2_rel <= a1_rel;
        for (i = 0; i < R; i = i + 1) a2_c[i] <= (RES_W+13)'(a1_r[i]) * $signed({2'b0, e_len}) - (RES_W+13)'(a1_s1);
        a3_v <= a2_v; a3_t <= a2_t; a3_h <= a2_h; a3_k <= a2_k; a3_rel <= a2_rel;
        for (i = 0; i < R; i = i + 1)
            a3_p[i] <= (RES_W+32)'(a2_c[i]) * $signed({1'b0, a2_rs}) + $signed((RES_W+32)'(1) <<< (3 + a2_k));
        z_valid <= a3_v; z_token <= a3_t; z_half <= a3_h;
        rel_en <= a3_rel; rel_half <= a3_h;
        for (i = 0; i < R; i = i + 1) z_vals[i*Z_W +: Z_W] <= Z_W'(a3_p[i] >>> (4 + a3_k));
    end
    assign prep_busy = rd_v | rv_v | st_v | pr_v | p1_v | p2_v | p3_v | p4_v | p5_v;
    assign z_pipe_busy = prep_busy | a1_v | a2_v | a3_v | z_valid;
endmodule
