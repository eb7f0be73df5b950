// qv_res_mem: the residual stream on chip, codes of EW bits, one token's run of W words at a time.
//
// A word is KP codes.  Chunk c of token t lives in word-bank c mod W at address
// t * (RCH_MAX / W) + c div W, so a run of n <= W consecutive words of one token touches n
// different banks: the output lanes read a token's run (the residual add of a projection or fc2)
// and write it back two cycles later.  Reads and writes take the run in position order (word i is
// chunk c0 + i).  Read latency 1 cycle.  RCH_MAX and W are powers of two.
// ALIGNED = 1: every run starts at a multiple of W (the softmax's e ring), so word i is bank i and
// neither side needs the rotation (its W:1 multiplexers).
module qv_res_mem #(
    parameter KP = 4,
    parameter W = 2,
    parameter TOK_MAX = 8,
    parameter RCH_MAX = 8,
    parameter EW = 20,
    parameter ALIGNED = 0
) (
    input  wire                          clk,
    input  wire                          wr_en,
    input  wire [$clog2(TOK_MAX)-1:0]    wr_token,
    input  wire [$clog2(RCH_MAX)-1:0]    wr_chunk,
    input  wire [$clog2(W+1)-1:0]        wr_words,
    input  wire [W*KP*EW-1:0]            wr_data,
    input  wire [$clog2(TOK_MAX)-1:0]    rd_token,
    input  wire [$clog2(RCH_MAX)-1:0]    rd_chunk,
    output wire [W*KP*EW-1:0]            rd_data
);
    localparam WW = KP * EW;
    localparam DEPTH = TOK_MAX * (RCH_MAX / W);
    localparam AW = $clog2(DEPTH);
    localparam CW = $clog2(RCH_MAX);
    localparam LW = (W > 1) ? $clog2(W) : 1;
    reg [LW-1:0] rd_rot;
    always @(posedge clk) rd_rot <= (W > 1) ? LW'(rd_chunk) : {LW{1'b0}};
    wire [W*WW-1:0] bank_q;
    genvar v, i;
    generate
        for (v = 0; v < W; v = v + 1) begin : bank
            wire [LW-1:0] wi = (W > 1 && !ALIGNED) ? LW'(v - wr_chunk) : LW'(v);  // the run's word in this bank
            wire [LW-1:0] ri = (W > 1 && !ALIGNED) ? LW'(v - rd_chunk) : LW'(v);
            wire [CW-1:0] wc = wr_chunk + CW'(wi);
            wire [CW-1:0] rc = rd_chunk + CW'(ri);
            wire [AW-1:0] wa = AW'(wr_token * (RCH_MAX / W) + wc / W);
            wire [AW-1:0] ra = AW'(rd_token * (RCH_MAX / W) + rc / W);
            reg [WW-1:0] mem [0:DEPTH-1];
            reg [WW-1:0] q;
            always @(posedge clk) begin
                if (wr_en && {1'b0, wi} < wr_words) mem[wa] <= wr_data[wi*WW +: WW];
                q <= mem[ra];
            end
            assign bank_q[v*WW +: WW] = q;
        end
        // back to position order: word i of the run came from bank (c0 + i) mod W
        for (i = 0; i < W; i = i + 1) begin : pos
            wire [LW-1:0] b = (W > 1 && !ALIGNED) ? LW'(rd_rot + i) : LW'(i);
            assign rd_data[i*WW +: WW] = bank_q[b*WW +: WW];
        end
    endgenerate
endmodule
