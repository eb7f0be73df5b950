// Testbench of qv_run_max: reads N, then N lines "ok v0 v1 ... v(R-1)"; writes N maxima.
module tb_qv_run_max #(parameter R = 8, parameter AW = 20, parameter STRIDE = 21);
    `include "qv_tb_io.svh"
    logic [R*STRIDE-1:0] vals;
    logic [R-1:0] ok;
    logic signed [AW-1:0] max;
    qv_run_max #(.R(R), .AW(AW), .STRIDE(STRIDE)) dut (.*);
    integer n, i, p;
    longint v, m;
    initial begin
        open_files();
        r = $fscanf(fi, "%d", n);
        for (i = 0; i < n; i++) begin
            r = $fscanf(fi, "%d", m);
            ok = R'(m);
            vals = '1;  // the bits between lanes are not the value's
            for (p = 0; p < R; p++) begin
                r = $fscanf(fi, "%d", v);
                vals[p*STRIDE +: AW] = AW'(v);
            end
            #1 $fwrite(fo, "%0d\n", max);
        end
        $fclose(fo); $finish;
    end
endmodule
