// qv_drain: holds a finished R x T tile of the array's sums and hands it out one token a cycle.
//
// On `load` (the array's out_valid) it copies the R x T sums, the R weight sums and the T code
// sums into shadow registers, so the array's accumulators are free for the next dot product at
// once.  Then it emits token 0, 1, ..., T-1 on the T following cycles: that token's R sums, its code
// sum, and the tile's weight sums, for R output lanes (qv_outstage).  `busy` is high while tokens
// remain.  The next `load` may come with the last token's emission (T cycles after the previous
// load); an earlier one loses tokens and latches `overrun`: the controller spaces tiles at least
// T cycles apart (K / KP >= T), or stalls the array.
// With `pair` (T even; Q K^T, whose rows take two lanes each, so that half the lanes would idle) it
// emits two tokens a cycle, 2m on out_acc / out_ca and 2m + 1 on out_acc_b / out_ca_b, and takes a
// tile every T / 2 cycles.
module qv_drain #(
    parameter R = 4,
    parameter T = 2,
    parameter ACC_W = 22,
    parameter SW_W = 16,
    parameter CA_W = 18
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  clear,    // a new run: forget an earlier overrun
    input  wire                  load,
    input  wire                  pair,     // two tokens a cycle (held from load to the tile's end)
    input  wire [R*T*ACC_W-1:0]  in_acc,   // token-major: (t * R + r)
    input  wire [R*SW_W-1:0]     in_sw,
    input  wire [T*CA_W-1:0]     in_ca,
    output reg                   out_valid,
    output reg [$clog2(T+1)-1:0] out_token,
    output reg [R*ACC_W-1:0]     out_acc,
    output reg [R*SW_W-1:0]      out_sw,
    output reg [CA_W-1:0]        out_ca,
    output reg [R*ACC_W-1:0]     out_acc_b, // token out_token + 1 (pair)
    output reg [CA_W-1:0]        out_ca_b,
    output wire                  busy,
    output reg                   overrun
);
    localparam TW = $clog2(T + 1);
    reg [R*T*ACC_W-1:0] acc_q;
    reg [T*CA_W-1:0] ca_q;
    reg [R*SW_W-1:0] sw_q;
    reg [TW-1:0] left;  // tokens still to emit
    reg two;            // this tile leaves in pairs
    assign busy = left != 0;
    always @(posedge clk) begin
        // emit the token at the bottom of the shadow (the last one may leave as the next tile loads)
        out_valid <= !rst && left != 0;
        out_token <= TW'(T) - left;
        out_acc <= acc_q[R*ACC_W-1:0];
        out_ca <= ca_q[CA_W-1:0];
        out_acc_b <= (R*ACC_W)'(acc_q >> (R * ACC_W));
        out_ca_b <= CA_W'(ca_q >> CA_W);
        if (rst) begin
            left <= 0;
            overrun <= 1'b0;
        end else if (load) begin
            overrun <= overrun | (left > (two ? TW'(2) : TW'(1)));
            acc_q <= in_acc;
            ca_q <= in_ca;
            sw_q <= in_sw;
            left <= TW'(T);
            two <= pair && T % 2 == 0;
        end else if (left != 0) begin
            acc_q <= two ? acc_q >> (2 * R * ACC_W) : acc_q >> (R * ACC_W);
            ca_q <= two ? ca_q >> (2 * CA_W) : ca_q >> CA_W;
            left <= left - (two ? TW'(2) : TW'(1));
        end
        out_sw <= sw_q;
        if (clear) overrun <= 1'b0;
    end
endmodule
