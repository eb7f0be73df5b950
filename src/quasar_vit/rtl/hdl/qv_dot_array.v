// qv_dot_array: the W4A6 array.  Each cycle, R nibble rows x T tokens x KP reduction lanes.
//
// Inputs per cycle: for each of R rows and T tokens, KP offset operands of the same k-chunk
// (w' = unsigned 4-bit, a' = unsigned 6-bit; see qv_mul_pack4 for the offsets).  Every 2 rows x
// 2 tokens x 1 lane is one DSP48E2 (packing 4); the KP products of each (row, token) go through an
// adder tree into an accumulator.  A dot product over K = n * KP takes n cycles: `in_first` on its
// first chunk clears the accumulators, `in_last` on its last one makes `out_valid` pulse with the
// R x T sums of w'a' on `out_acc`, together with the operand sums the offsets need:
//     sum_k w'[r,k] (out_sw, per row) and sum_k a'[t,k] (out_ca, per token),
// since  sum (w'-ow)(a'-oa) = sum w'a' - oa sum w' - ow sum a' + K ow oa  (qv_outstage undoes it).
// A new dot product may start the cycle after `in_last`: the array never stalls by itself.
// Latency from an input chunk to its accumulator: 3 (DSP) + log2(KP) (tree) + 1 (accumulate).
module qv_dot_array #(
    parameter R = 4,        // nibble rows (even)
    parameter T = 2,        // tokens (even)
    parameter KP = 4,       // reduction lanes (a power of two)
    parameter ACC_W = 22,   // accumulator width: sum of K products of <= 945 (K <= 4096)
    parameter SW_W = 16,    // sum of K weights w' <= 15
    parameter CA_W = 18     // sum of K codes a' <= 63
) (
    input  wire                  clk,
    input  wire                  in_valid,
    input  wire                  in_first,
    input  wire                  in_last,
    input  wire [R*KP*4-1:0]     w,
    input  wire [T*KP*6-1:0]     a,
    output reg                   out_valid,
    output wire [R*T*ACC_W-1:0]  out_acc,
    output wire [R*SW_W-1:0]     out_sw,
    output wire [T*CA_W-1:0]     out_ca
);
    localparam D = $clog2(KP);
    localparam LAT = 3 + D;           // input chunk -> tree output
    // control, delayed to the trees' outputs
    reg [LAT-1:0] v_d, f_d, l_d;
    always @(posedge clk) begin
        v_d <= {v_d[LAT-2:0], in_valid};
        f_d <= {f_d[LAT-2:0], in_first};
        l_d <= {l_d[LAT-2:0], in_last};
        out_valid <= v_d[LAT-1] & l_d[LAT-1];
    end
    wire acc_en = v_d[LAT-1];
    wire acc_clr = f_d[LAT-1];

    // products, gathered per (row, token) as KP fields of 10 bits
    wire [R*T*KP*10-1:0] prod;
    genvar i, j, k, r, t;
    generate
        for (k = 0; k < KP; k = k + 1) begin : lane
            for (i = 0; i < R / 2; i = i + 1) begin : rp
                for (j = 0; j < T / 2; j = j + 1) begin : tp
                    qv_mul_pack4 u (
                        .clk(clk),
                        .w0(w[((2*i)*KP + k)*4 +: 4]),
                        .w1(w[((2*i+1)*KP + k)*4 +: 4]),
                        .a0(a[((2*j)*KP + k)*6 +: 6]),
                        .a1(a[((2*j+1)*KP + k)*6 +: 6]),
                        .p00(prod[(((2*j)*R + 2*i)*KP + k)*10 +: 10]),
                        .p10(prod[(((2*j)*R + 2*i+1)*KP + k)*10 +: 10]),
                        .p01(prod[(((2*j+1)*R + 2*i)*KP + k)*10 +: 10]),
                        .p11(prod[(((2*j+1)*R + 2*i+1)*KP + k)*10 +: 10])
                    );
                end
            end
        end
        for (t = 0; t < T; t = t + 1) begin : tok
            for (r = 0; r < R; r = r + 1) begin : row
                qv_tree_acc #(.N(KP), .W(10), .ACC_W(ACC_W)) sum (
                    .clk(clk), .in(prod[(t*R + r)*KP*10 +: KP*10]), .en(acc_en), .clr(acc_clr),
                    .acc(out_acc[(t*R + r)*ACC_W +: ACC_W])
                );
            end
        end
    endgenerate

    // operand sums, delayed like the products (3 stages) before their trees
    reg [R*KP*4-1:0] w_d1, w_d2, w_d3;
    reg [T*KP*6-1:0] a_d1, a_d2, a_d3;
    always @(posedge clk) begin
        w_d1 <= w; w_d2 <= w_d1; w_d3 <= w_d2;
        a_d1 <= a; a_d2 <= a_d1; a_d3 <= a_d2;
    end
    generate
        for (r = 0; r < R; r = r + 1) begin : wsum
            qv_tree_acc #(.N(KP), .W(4), .ACC_W(SW_W)) sum (
                .clk(clk), .in(w_d3[r*KP*4 +: KP*4]), .en(acc_en), .clr(acc_clr), .acc(out_sw[r*SW_W +: SW_W])
            );
        end
        for (t = 0; t < T; t = t + 1) begin : asum
            qv_tree_acc #(.N(KP), .W(6), .ACC_W(CA_W)) sum (
                .clk(clk), .in(a_d3[t*KP*6 +: KP*6]), .en(acc_en), .clr(acc_clr), .acc(out_ca[t*CA_W +: CA_W])
            );
        end
    endgenerate
endmodule
