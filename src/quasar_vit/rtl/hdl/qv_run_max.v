// qv_run_max: the largest of R signed lanes, lane p taking part when ok[p] (lane 0 always does), as a
// balanced tree of compare-and-select nodes: ceil(log2 R) levels in one cycle, where a serial chain
// over the lanes is R - 1 (docs/rtl.md, the timing proxy).  A lane left out is replaced by lane 0,
// which never changes the maximum.  Node i of the heap has children 2i+1 and 2i+2; the lanes are the
// leaves R-1 .. 2R-2.  Lane p's value is vals[p*STRIDE +: AW].  Combinational.
module qv_run_max #(
    parameter R = 8,
    parameter AW = 20,
    parameter STRIDE = 20
) (
    input  wire [R*STRIDE-1:0] vals,
    input  wire [R-1:0]        ok,
    output wire [AW-1:0]       max
);
    wire [(2*R-1)*AW-1:0] node;
    genvar p;
    generate
        for (p = 0; p < R; p = p + 1) begin : leaf
            assign node[(R-1+p)*AW +: AW] = (p == 0 || ok[p]) ? vals[p*STRIDE +: AW] : vals[0 +: AW];
        end
        for (p = 0; p < R - 1; p = p + 1) begin : inner
            wire signed [AW-1:0] l = node[(2*p+1)*AW +: AW], r = node[(2*p+2)*AW +: AW];
            assign node[p*AW +: AW] = r > l ? r : l;
        end
    endgenerate
    assign max = node[0 +: AW];
endmodule
