// qv_vt_mem: the V third of the qkv layer's output, transposed on chip: P V's stationary operand.
//
// V^T[d][j] (dim d, key token j) is a 6-bit code (offset, as the activation memory holds it) in
// bank d mod R at address (d div R) * NCH + j div KP, byte lane j mod KP of the word (8 bits a
// code, the low 6 used: the per-code write enable is a block RAM's byte enable).
// A write takes one token's codes of n <= R consecutive dims d0 .. d0 + n - 1 (the qkv lanes' codes
// of one row tile, so every code lands in its own bank).  A read gives the R/2 dims
// d0 .. d0 + R/2 - 1 (d0 a multiple of R/2) at key chunk c: KP codes each, dim i at bits
// i*KP*6, key k of the chunk at 6*k within it.  Read latency 1 cycle.  D_MAX is a multiple of R.
module qv_vt_mem #(
    parameter R = 4,
    parameter KP = 4,
    parameter D_MAX = 16,      // dims (the embedding width)
    parameter TOK_MAX = 8,     // key tokens
    parameter NCH = 2          // key chunks: at least ceil(TOK_MAX / KP), a power of two
) (
    input  wire                          clk,
    input  wire                          wr_en,
    input  wire [$clog2(TOK_MAX)-1:0]    wr_token,
    input  wire [$clog2(D_MAX)-1:0]      wr_d0,
    input  wire [$clog2(R+1)-1:0]        wr_n,
    input  wire [R*6-1:0]                wr_data,    // code i (dim d0 + i) at bits i*6
    input  wire [$clog2(D_MAX)-1:0]      rd_d0,
    input  wire [$clog2(NCH)-1:0]        rd_chunk,
    output wire [R/2*KP*6-1:0]           rd_data
);
    localparam DEPTH = (D_MAX / R) * NCH;
    localparam AW = $clog2(DEPTH);
    localparam RW = $clog2(R);
    localparam H = R / 2;
    wire [$clog2(KP)-1:0] lane = ($clog2(KP))'(wr_token % KP);
    wire [AW-1:0] ra = AW'((rd_d0 / R) * NCH + rd_chunk);
    reg upper;  // the read's dims are in banks R/2 .. R-1
    always @(posedge clk) upper <= (rd_d0 % R) >= H;
    wire [R*KP*6-1:0] bank_q;
    genvar b, l;
    generate
        for (b = 0; b < R; b = b + 1) begin : bank
            wire [RW-1:0] i = RW'(b - wr_d0);  // the write's code in this bank
            wire hit = wr_en && {1'b0, i} < wr_n;
            wire [$clog2(D_MAX)-1:0] d = wr_d0 + ($clog2(D_MAX))'(i);
            wire [AW-1:0] wa = AW'((d / R) * NCH + wr_token / KP);
            reg [KP*8-1:0] mem [0:DEPTH-1];
            reg [KP*8-1:0] q;
            always @(posedge clk) begin
                for (int k = 0; k < KP; k = k + 1)
                    if (hit && lane == k) mem[wa][k*8 +: 8] <= {2'b00, wr_data[i*6 +: 6]};
                q <= mem[ra];
            end
            for (l = 0; l < KP; l = l + 1) begin : code
                assign bank_q[(b*KP + l)*6 +: 6] = q[l*8 +: 6];
            end
        end
    endgenerate
    assign rd_data = upper ? bank_q[R*KP*6-1 : H*KP*6] : bank_q[H*KP*6-1:0];
endmodule
