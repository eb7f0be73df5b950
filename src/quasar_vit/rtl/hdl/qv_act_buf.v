// qv_act_buf: the on-chip activation codes of one layer input, read a token tile and a k-chunk a cycle.
//
// Codes are stored as the array takes them (offset to unsigned: a' = a + 32 for signed codes,
// see qv_mul_pack4), KP codes of 6 bits to a word.  Token t lives in bank t mod T at address
// (t div T) * CH_MAX + chunk, so one read gives the same chunk of the T tokens of a tile: the
// array's whole activation input for a cycle.  One write port (a word a cycle) fills it.
// Read latency: 1 cycle (a registered block-RAM read).
module qv_act_buf #(
    parameter T = 2,
    parameter KP = 4,
    parameter TILES_MAX = 4,   // token tiles: tokens <= T * TILES_MAX
    parameter CH_MAX = 8       // k-chunks: K <= KP * CH_MAX
) (
    input  wire                          clk,
    input  wire                          wr_en,
    input  wire [$clog2(T*TILES_MAX)-1:0] wr_token,
    input  wire [$clog2(CH_MAX)-1:0]     wr_chunk,
    input  wire [KP*6-1:0]               wr_data,
    input  wire [$clog2(TILES_MAX)-1:0]  rd_tile,
    input  wire [$clog2(CH_MAX)-1:0]     rd_chunk,
    output wire [T*KP*6-1:0]             rd_data
);
    localparam DEPTH = TILES_MAX * CH_MAX;
    localparam AW = $clog2(DEPTH);
    wire [AW-1:0] wr_addr = AW'((wr_token / T) * CH_MAX + wr_chunk);
    wire [AW-1:0] rd_addr = AW'(rd_tile * CH_MAX + rd_chunk);
    genvar b;
    generate
        for (b = 0; b < T; b = b + 1) begin : bank
            reg [KP*6-1:0] mem [0:DEPTH-1];
            reg [KP*6-1:0] q;
            always @(posedge clk) begin
                if (wr_en && (wr_token % T) == b) mem[wr_addr] <= wr_data;
                q <= mem[rd_addr];
            end
            assign rd_data[b*KP*6 +: KP*6] = q;
        end
    endgenerate
endmodule
