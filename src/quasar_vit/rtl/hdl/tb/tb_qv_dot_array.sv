// Testbench of qv_dot_array.  Input: n_tiles; per tile: chunks; per chunk: idle cycles before it,
// R*KP weights w'[r][k] (row-major), T*KP codes a'[t][k].  Output per finished tile: the R*T sums
// (token-major: t*R + r), then R weight sums, then T code sums.
module tb_qv_dot_array #(parameter R = 4, parameter T = 2, parameter KP = 4,
                         parameter ACC_W = 22, parameter SW_W = 16, parameter CA_W = 18);
    `include "qv_tb_io.svh"
    logic clk = 0;
    always #5 clk = ~clk;
    logic in_valid = 0, in_first = 0, in_last = 0, out_valid;
    logic [R*KP*4-1:0] w = 0;
    logic [T*KP*6-1:0] a = 0;
    logic [R*T*ACC_W-1:0] out_acc;
    logic [R*SW_W-1:0] out_sw;
    logic [T*CA_W-1:0] out_ca;
    qv_dot_array #(.R(R), .T(T), .KP(KP), .ACC_W(ACC_W), .SW_W(SW_W), .CA_W(CA_W)) dut (.*);
    integer ntiles, tile, nch, ch, idle, x, got = 0, c;
    always @(posedge clk) if (out_valid) begin
        for (c = 0; c < R*T; c++) $fwrite(fo, "%0d\n", out_acc[c*ACC_W +: ACC_W]);
        for (c = 0; c < R; c++) $fwrite(fo, "%0d\n", out_sw[c*SW_W +: SW_W]);
        for (c = 0; c < T; c++) $fwrite(fo, "%0d\n", out_ca[c*CA_W +: CA_W]);
        got++;
    end
    initial begin
        open_files();
        r = $fscanf(fi, "%d", ntiles);
        for (tile = 0; tile < ntiles; tile++) begin
            r = $fscanf(fi, "%d", nch);
            for (ch = 0; ch < nch; ch++) begin
                r = $fscanf(fi, "%d", idle);
                in_valid = 0;
                repeat (idle) @(posedge clk);
                #1;
                for (c = 0; c < R*KP; c++) begin r = $fscanf(fi, "%d", x); w[c*4 +: 4] = 4'(x); end
                for (c = 0; c < T*KP; c++) begin r = $fscanf(fi, "%d", x); a[c*6 +: 6] = 6'(x); end
                in_valid = 1; in_first = (ch == 0); in_last = (ch == nch - 1);
                @(posedge clk); #1;
            end
        end
        in_valid = 0; in_first = 0; in_last = 0;
        repeat (20) @(posedge clk);
        $fclose(fo);
        $finish;
    end
endmodule
