// qv_tree_acc: an adder tree over N unsigned W-bit inputs into an accumulator of ACC_W bits.
//
// `en` and `clr` are the inputs' valid and first-chunk flags delayed by the tree's latency
// (log2 N): on `en`, acc <= (clr ? 0 : acc) + sum.  One per (row, token) of the array, and one per
// row and per token for the operand sums the offsets need (qv_dot_array).
module qv_tree_acc #(
    parameter N = 8,
    parameter W = 10,
    parameter ACC_W = 22
) (
    input  wire              clk,
    input  wire [N*W-1:0]    in,
    input  wire              en,
    input  wire              clr,
    output reg [ACC_W-1:0]   acc
);
    wire [W+$clog2(N)-1:0] s;
    qv_adder_tree #(.N(N), .W(W)) tree (.clk(clk), .in(in), .sum(s));
    always @(posedge clk) if (en) acc <= (clr ? {ACC_W{1'b0}} : acc) + ACC_W'(s);
endmodule
