// Exhaustive, self-checking testbench of qv_mul_pack4: every (w0', w1', a0', a1') in
// [0,15]^2 x [0,63]^2 (2**20 operand sets, one a cycle); each of the four packed fields must equal
// its own product.  Output: the number of operand sets checked, then the number of mismatches.
module tb_qv_mul_pack4;
    logic clk = 0;
    always #5 clk = ~clk;
    logic [3:0] w0, w1;
    logic [5:0] a0, a1;
    logic [9:0] p00, p10, p01, p11;
    qv_mul_pack4 dut (.*);
    localparam integer LAT = 3;
    logic [19:0] hist [0:LAT];  // operand sets in flight
    integer fo, checked = 0, bad = 0, n, i;
    string fout;
    initial begin
        void'($value$plusargs("out=%s", fout));
        fo = $fopen(fout, "w");
        for (n = 0; n < (1 << 20) + LAT; n++) begin
            {w1, w0, a1, a0} = 20'(n);
            for (i = LAT; i > 0; i--) hist[i] = hist[i-1];
            hist[0] = 20'(n);
            @(posedge clk); #1;
            if (n >= LAT) begin : check
                logic [3:0] x0, x1; logic [5:0] y0, y1;
                {x1, x0, y1, y0} = hist[LAT-1];
                checked++;
                if (p00 != 10'(x0 * y0) || p10 != 10'(x1 * y0) || p01 != 10'(x0 * y1) || p11 != 10'(x1 * y1)) bad++;
            end
        end
        $fwrite(fo, "%0d\n%0d\n", checked, bad);
        $fclose(fo);
        $finish;
    end
endmodule
