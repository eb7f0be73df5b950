// Testbench of qv_requant: reads N, then N lines "acc mult offset shift lo hi"; writes N codes.
module tb_qv_requant #(parameter ACC_W = 27, parameter SUM_W = 48, parameter OUT_W = 21);
    `include "qv_tb_io.svh"
    logic clk = 0;
    always #5 clk = ~clk;
    logic in_valid = 0, out_valid;
    logic signed [ACC_W-1:0] acc;
    logic signed [17:0] mult;
    logic signed [SUM_W-1:0] offset;
    logic [5:0] shift;
    logic signed [OUT_W-1:0] lo, hi, code;
    qv_requant #(.ACC_W(ACC_W), .SUM_W(SUM_W), .OUT_W(OUT_W)) dut (.*);
    integer n, i, got;
    longint a, m, b, s, l, h;
    initial begin
        open_files();
        r = $fscanf(fi, "%d", n);
        got = 0;
        for (i = 0; i < n; i++) begin
            r = $fscanf(fi, "%d %d %d %d %d %d", a, m, b, s, l, h);
            acc = ACC_W'(a); mult = 18'(m); offset = SUM_W'(b); shift = 6'(s); lo = OUT_W'(l); hi = OUT_W'(h);
            in_valid = 1;
            @(posedge clk); #1;
            if (out_valid) begin $fwrite(fo, "%0d\n", code); got++; end
        end
        in_valid = 0;
        while (got < n) begin @(posedge clk); #1; if (out_valid) begin $fwrite(fo, "%0d\n", code); got++; end end
        $fclose(fo); $finish;
    end
endmodule
