// qv_adder_tree: the pipelined sum of N unsigned W-bit values (N a power of two), one level a cycle.
//
// A heap of registers: node i (internal) registers the sum of nodes 2i+1 and 2i+2 every cycle, the
// leaves N-1 .. 2N-2 are the inputs.  Values move up one level per cycle, so the root holds the
// sum of the inputs of log2(N) cycles ago.  Each level's width is the leaves' plus its height.
module qv_adder_tree #(
    parameter N = 8,
    parameter W = 10
) (
    input  wire                       clk,
    input  wire [N*W-1:0]             in,
    output wire [W+$clog2(N)-1:0]     sum
);
    localparam D = $clog2(N);
    localparam OW = W + D;
    wire [OW*(2*N-1)-1:0] node;
    genvar i;
    generate
        for (i = 0; i < N; i = i + 1) begin : leaf
            assign node[(N-1+i)*OW +: W] = in[i*W +: W];
            if (D > 0) begin : pad
                assign node[(N-1+i)*OW+W +: (D > 0 ? D : 1)] = 0;
            end
        end
        for (i = 0; i < N - 1; i = i + 1) begin : inner
            // the height of node i above the leaves: D - depth(i)
            localparam integer H = D - $clog2(i + 2) + 1;
            reg [W+H-1:0] r;
            always @(posedge clk) r <= node[(2*i+1)*OW +: W+H-1] + node[(2*i+2)*OW +: W+H-1];
            assign node[i*OW +: W+H] = r;
            if (H < D) begin : pad
                assign node[i*OW+W+H +: (H < D ? D-H : 1)] = 0;
            end
        end
    endgenerate
    assign sum = node[0 +: OW];
endmodule
