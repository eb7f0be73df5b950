// qv_act_mem: a layer's activation codes on chip: read a token tile's k-chunk a cycle (the array's
// input), written a token's run of up to W consecutive words a cycle (the output lanes).
//
// A word is KP codes of 6 bits, stored as the array takes them (offset to unsigned).  Token t,
// chunk c live in bank (t mod T, c mod W) at address (t div T) * (CH_MAX / W) + c div W: one
// read touches T banks (one per token, all in word-bank c mod W); one write of words
// c0 .. c0 + n - 1 of a token touches n <= W different word-banks.  W = R / KP: the output lanes
// give a token's codes of one row tile, a whole number of words (rtl/layout.py, slot_program).
// Read latency 1 cycle.  CH_MAX and W are powers of two.
module qv_act_mem #(
    parameter T = 2,
    parameter KP = 4,
    parameter W = 2,
    parameter TILES_MAX = 4,
    parameter CH_MAX = 8
) (
    input  wire                           clk,
    input  wire                           wr_en,
    input  wire [$clog2(T*TILES_MAX)-1:0] wr_token,
    input  wire [$clog2(CH_MAX)-1:0]      wr_chunk,   // c0
    input  wire [$clog2(W+1)-1:0]         wr_words,   // n, 1..W
    input  wire [W*KP*6-1:0]              wr_data,    // word i (chunk c0 + i) at bits i*KP*6
    input  wire [$clog2(TILES_MAX)-1:0]   rd_tile,
    input  wire [$clog2(CH_MAX)-1:0]      rd_chunk,
    output wire [T*KP*6-1:0]              rd_data
);
    localparam WW = KP * 6;
    localparam DEPTH = TILES_MAX * (CH_MAX / W);
    localparam AW = $clog2(DEPTH);
    localparam CW = $clog2(CH_MAX);
    localparam LW = (W > 1) ? $clog2(W) : 1;
    wire [$clog2(TILES_MAX)-1:0] wr_tile = ($clog2(TILES_MAX))'(wr_token / T);
    wire [$clog2(T)-1+1:0] wr_bank = ($clog2(T)+1)'(wr_token % T);
    genvar b, v;
    generate
        for (b = 0; b < T; b = b + 1) begin : tok
            wire [W*WW-1:0] qs;
            for (v = 0; v < W; v = v + 1) begin : word
                // the write's word i that lands in word-bank v: i = (v - c0) mod W
                wire [LW-1:0] i = (W > 1) ? LW'(v - wr_chunk) : {LW{1'b0}};
                wire [CW-1:0] c = wr_chunk + CW'(i);
                wire hit = wr_en && wr_bank == b && {1'b0, i} < wr_words;
                wire [AW-1:0] wa = AW'(wr_tile * (CH_MAX / W) + (c / W));
                wire [AW-1:0] ra = AW'(rd_tile * (CH_MAX / W) + (rd_chunk / W));
                reg [WW-1:0] mem [0:DEPTH-1];
                reg [WW-1:0] q;
                always @(posedge clk) begin
                    if (hit) mem[wa] <= wr_data[i*WW +: WW];
                    q <= mem[ra];
                end
                assign qs[v*WW +: WW] = q;
            end
            // the word-bank of the chunk read one cycle ago
            reg [LW-1:0] sel;
            always @(posedge clk) sel <= (W > 1) ? LW'(rd_chunk) : {LW{1'b0}};
            assign rd_data[b*WW +: WW] = qs[sel*WW +: WW];
        end
    endgenerate
endmodule
