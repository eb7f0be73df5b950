// qv_requant: a requantiser, clamp((acc * mult + offset) >>> shift, lo, hi), one value per cycle.
//
// The arithmetic of quasar_vit.quantization.intops.requant: a per-row fixed-point multiplier
// (|mult| < 2**17, the 18-bit signed port of a DSP48E2), an offset that holds the bias and the
// rounding half, an arithmetic right shift (floor division by 2**shift) and a clamp to the code
// range.  The product acc * mult is the DSP's 27 x 18 multiply; the offset add, the shifter and the
// clamp are fabric.  Pipeline: 4 stages (input register, product, sum, shift + clamp).
// HELD_RANGE = 1: lo and hi are held while values are in flight (a core step's code range), so they
// are not carried down the pipeline (42 fewer shift-register LUTs for 21-bit codes).
module qv_requant #(
    parameter ACC_W = 27,   // accumulator width (signed), <= 27 for one DSP48E2
    parameter SUM_W = 48,   // width of acc * mult + offset (signed): the DSP48E2 P width
    parameter OUT_W = 21,   // code width (signed)
    parameter HELD_RANGE = 0
) (
    input  wire                     clk,
    input  wire                     in_valid,
    input  wire signed [ACC_W-1:0]  acc,
    input  wire signed [17:0]       mult,
    input  wire signed [SUM_W-1:0]  offset,
    input  wire [5:0]               shift,
    input  wire signed [OUT_W-1:0]  lo,
    input  wire signed [OUT_W-1:0]  hi,
    output reg                      out_valid,
    output reg signed [OUT_W-1:0]   code
);
    // stage 1: operands
    reg signed [ACC_W-1:0] acc1;
    reg signed [17:0] mult1;
    reg signed [SUM_W-1:0] off1;
    reg [5:0] sh1;
    reg signed [OUT_W-1:0] lo1, hi1;
    reg v1;
    // stage 2: product
    reg signed [ACC_W+17:0] prod2;
    reg signed [SUM_W-1:0] off2;
    reg [5:0] sh2;
    reg signed [OUT_W-1:0] lo2, hi2;
    reg v2;
    // stage 3: sum
    reg signed [SUM_W-1:0] sum3;
    reg [5:0] sh3;
    reg signed [OUT_W-1:0] lo3, hi3;
    reg v3;
    wire signed [SUM_W-1:0] shifted = sum3 >>> sh3;
    wire signed [OUT_W-1:0] lo_c = HELD_RANGE ? lo : lo3, hi_c = HELD_RANGE ? hi : hi3;
    always @(posedge clk) begin
        acc1 <= acc; mult1 <= mult; off1 <= offset; sh1 <= shift; lo1 <= lo; hi1 <= hi; v1 <= in_valid;
        prod2 <= acc1 * mult1; off2 <= off1; sh2 <= sh1; lo2 <= lo1; hi2 <= hi1; v2 <= v1;
        sum3 <= SUM_W'(prod2) + off2; sh3 <= sh2; lo3 <= lo2; hi3 <= hi2; v3 <= v2;
        out_valid <= v3;
        if (shifted < SUM_W'(lo_c)) code <= lo_c;
        else if (shifted > SUM_W'(hi_c)) code <= hi_c;
        else code <= shifted[OUT_W-1:0];
    end
endmodule
