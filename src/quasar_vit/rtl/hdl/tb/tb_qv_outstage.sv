// Testbench of qv_outstage: reads N, then N lines
//   "s_hi s_lo sw_hi sw_lo ca is8 a_signed k mult offset shift mode res lo hi"; writes N codes.
module tb_qv_outstage;
    `include "qv_tb_io.svh"
    logic clk = 0;
    always #5 clk = ~clk;
    logic in_valid = 0, out_valid, is8, a_signed, mode, bypass = 0;
    logic [21:0] s_hi, s_lo;
    logic [15:0] sw_hi, sw_lo;
    logic [17:0] ca;
    logic [12:0] k;
    logic signed [17:0] mult;
    logic signed [47:0] offset;
    logic [5:0] shift;
    logic signed [20:0] res, lo, hi, code;
    qv_outstage dut (.*);
    integer n, i, got = 0;
    longint v [0:14];
    always @(posedge clk) if (out_valid) begin $fwrite(fo, "%0d\n", code); got++; end
    initial begin
        open_files();
        r = $fscanf(fi, "%d", n);
        for (i = 0; i < n; i++) begin
            for (int j = 0; j < 15; j++) r = $fscanf(fi, "%d", v[j]);
            s_hi = 22'(v[0]); s_lo = 22'(v[1]); sw_hi = 16'(v[2]); sw_lo = 16'(v[3]); ca = 18'(v[4]);
            is8 = v[5] != 0; a_signed = v[6] != 0; k = 13'(v[7]); mult = 18'(v[8]); offset = 48'(v[9]);
            shift = 6'(v[10]); mode = v[11] != 0; res = 21'(v[12]); lo = 21'(v[13]); hi = 21'(v[14]);
            in_valid = 1;
            @(posedge clk); #1;
        end
        in_valid = 0;
        while (got < n) @(posedge clk);
        #1 $fclose(fo);
        $finish;
    end
endmodule
