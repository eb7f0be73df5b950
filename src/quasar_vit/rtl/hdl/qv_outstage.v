// qv_outstage: one output lane after the array.  The array's unsigned sums -> the signed dot
// product -> the requantised code, or the residual stream's new code.  One element per cycle.
//
//   dot(row)  = S' - oa*SW - ow*CA + K*ow*oa          (undo the operand offsets, rtl/packing.py)
//   acc       = 16*dot(high nibble row) + dot(low nibble row)   for an 8-bit row, dot(row) for a 4-bit one
//   mode 0:   code = clamp((acc*M + B) >>> S, lo, hi)                    (q/k/v, P v, GELU index, ...)
//   mode 1:   code = clamp(res + clamp((acc*M + B) >>> S, lo, hi), lo, hi)   (intops.residual_add)
//   bypass:   acc = s_hi taken as a signed number (LayerNorm's normalised value Z; then M, B, S are
//             the channel's gain, offset and shift)
// The high (or only) nibble row is signed (ow = 8), the low one unsigned (ow = 0); the codes are
// signed (oa = 32) or unsigned (oa = 0, softmax probabilities).
// Pipeline: 2 stages (offsets, nibble combine) + qv_requant's 4 + 1 (residual add) = 7.
// In qv_gemm_core the residual add is the write-back's (RESIDUAL = 0: the last stage only registers
// the code) and the code range is the step's, held (HELD_RANGE = 1): neither is carried down the
// pipeline.  Hierarchical synthesis sizes each module once, so unused ports cost logic unless a
// parameter removes them.
module qv_outstage #(
    parameter ACC_W = 22,   // the array's accumulator width (unsigned sums)
    parameter SW_W = 16,
    parameter CA_W = 18,
    parameter K_W = 13,     // the number of terms K (< 2**K_W)
    parameter DOT_W = 27,   // signed dot product (<= 27 for the DSP's port)
    parameter SUM_W = 48,
    parameter OUT_W = 21,
    parameter RESIDUAL = 1,
    parameter HELD_RANGE = 0
) (
    input  wire                     clk,
    input  wire                     in_valid,
    input  wire [ACC_W-1:0]         s_hi,     // S' of the high nibble row (the only one of a 4-bit row)
    input  wire [ACC_W-1:0]         s_lo,     // S' of the low nibble row (8-bit rows)
    input  wire [SW_W-1:0]          sw_hi,
    input  wire [SW_W-1:0]          sw_lo,
    input  wire [CA_W-1:0]          ca,
    input  wire                     is8,
    input  wire                     a_signed, // oa = 32 (signed codes) or 0
    input  wire [K_W-1:0]           k,
    input  wire signed [17:0]       mult,
    input  wire signed [SUM_W-1:0]  offset,
    input  wire [5:0]               shift,
    input  wire                     mode,     // 0: code, 1: residual add
    input  wire                     bypass,   // s_hi is a signed value to requantise as it is (LayerNorm's Z)
    input  wire signed [OUT_W-1:0]  res,
    input  wire signed [OUT_W-1:0]  lo,
    input  wire signed [OUT_W-1:0]  hi,
    output reg                      out_valid,
    output reg signed [OUT_W-1:0]   code
);
    // stage 1: offsets undone per nibble row
    reg signed [DOT_W-1:0] dot_hi, dot_lo;
    reg is8_1, v1;
    // side inputs, delayed to the requantiser's input (2 stages) and to its output (6 stages)
    reg signed [17:0] mult_d [0:1];
    reg signed [SUM_W-1:0] off_d [0:1];
    reg [5:0] sh_d [0:1];
    reg signed [OUT_W-1:0] lo_d [0:5], hi_d [0:5], res_d [0:5];
    reg mode_d [0:5];
    wire signed [DOT_W-1:0] oa_sw_hi = a_signed ? DOT_W'(sw_hi) <<< 5 : {DOT_W{1'b0}};
    wire signed [DOT_W-1:0] oa_sw_lo = a_signed ? DOT_W'(sw_lo) <<< 5 : {DOT_W{1'b0}};
    wire signed [DOT_W-1:0] k_ow_oa = a_signed ? DOT_W'(k) <<< 8 : {DOT_W{1'b0}};
    // stage 2: the row's accumulator
    reg signed [DOT_W-1:0] acc2;
    reg v2;
    integer i;
    always @(posedge clk) begin
        dot_hi <= bypass ? DOT_W'($signed(s_hi)) : DOT_W'(s_hi) - oa_sw_hi - (DOT_W'(ca) <<< 3) + k_ow_oa;
        dot_lo <= DOT_W'(s_lo) - oa_sw_lo;
        is8_1 <= is8; v1 <= in_valid;
        acc2 <= is8_1 ? (dot_hi <<< 4) + dot_lo : dot_hi;
        v2 <= v1;
        mult_d[0] <= mult; off_d[0] <= offset; sh_d[0] <= shift;
        mult_d[1] <= mult_d[0]; off_d[1] <= off_d[0]; sh_d[1] <= sh_d[0];
        lo_d[0] <= lo; hi_d[0] <= hi; res_d[0] <= res; mode_d[0] <= mode;
        for (i = 1; i < 6; i = i + 1) begin
            lo_d[i] <= lo_d[i-1]; hi_d[i] <= hi_d[i-1]; res_d[i] <= res_d[i-1]; mode_d[i] <= mode_d[i-1];
        end
    end
    wire rq_valid;
    wire signed [OUT_W-1:0] rq_code;
    qv_requant #(.ACC_W(DOT_W), .SUM_W(SUM_W), .OUT_W(OUT_W), .HELD_RANGE(HELD_RANGE)) requant (
        .clk(clk), .in_valid(v2), .acc(acc2), .mult(mult_d[1]), .offset(off_d[1]), .shift(sh_d[1]),
        .lo(HELD_RANGE ? lo : lo_d[1]), .hi(HELD_RANGE ? hi : hi_d[1]), .out_valid(rq_valid), .code(rq_code)
    );
    // stage 7: the residual add (saturating), or the code as it is
    wire signed [OUT_W:0] sum = (OUT_W+1)'(rq_code) + (OUT_W+1)'(res_d[5]);  // sign-extended: both signed
    always @(posedge clk) begin
        out_valid <= rq_valid;
        if (!RESIDUAL || !mode_d[5]) code <= rq_code;
        else if (sum < (OUT_W+1)'(lo_d[5])) code <= lo_d[5];
        else if (sum > (OUT_W+1)'(hi_d[5])) code <= hi_d[5];
        else code <= sum[OUT_W-1:0];
    end
endmodule
