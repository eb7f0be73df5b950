// qv_mul_pack4: four W4A6 products in one DSP48E2 (packing 4: two weights x two activations).
//
// The operands are offset to unsigned: a signed 4-bit weight w becomes w' = w + 8 (its sign bit
// inverted), a signed 6-bit code a becomes a' = a + 32 (likewise); unsigned nibbles and codes stay
// as they are.  Then every product w'a' <= 15 * 63 = 945 fits 10 bits, and with
//     A = a0' + a1' * 2**20  (26 bits, the 27-bit port)     B = w0' + w1' * 2**10  (14 bits)
// the 40-bit product A * B holds the four products side by side, with no carries between them:
//     bits [9:0] w0'a0'   [19:10] w1'a0'   [29:20] w0'a1'   [39:30] w1'a1'.
// The offsets are undone once per dot product, from operand sums (qv_dot_array, qv_outstage).
// Pipeline: 3 stages (the DSP48E2's A/B, M and P registers).
module qv_mul_pack4 (
    input  wire        clk,
    input  wire [3:0]  w0,
    input  wire [3:0]  w1,
    input  wire [5:0]  a0,
    input  wire [5:0]  a1,
    output wire [9:0]  p00,  // w0' * a0'
    output wire [9:0]  p10,  // w1' * a0'
    output wire [9:0]  p01,  // w0' * a1'
    output wire [9:0]  p11   // w1' * a1'
);
    reg [25:0] a_r;
    reg [13:0] b_r;
    reg [39:0] m_r, p_r;
    always @(posedge clk) begin
        a_r <= {a1, 14'b0, a0};
        b_r <= {w1, 6'b0, w0};
        m_r <= a_r * b_r;
        p_r <= m_r;
    end
    assign p00 = p_r[9:0];
    assign p10 = p_r[19:10];
    assign p01 = p_r[29:20];
    assign p11 = p_r[39:30];
endmodule
