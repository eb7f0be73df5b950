// Testbench of qv_drain: reads R, T are parameters; then the pair flag and n_tiles; per tile: the gap
// (cycles from the previous load), R*T sums, R weight sums, T code sums.  Output per emitted token:
// token index, R sums, R weight sums, code sum (with pair: the two tokens of a cycle, one after the
// other); at the end the overrun flag.
module tb_qv_drain #(parameter R = 4, parameter T = 2, parameter ACC_W = 22, parameter SW_W = 16, parameter CA_W = 18);
    `include "qv_tb_io.svh"
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1, clear = 0, load = 0, pair = 0, out_valid, busy, overrun;
    logic [R*T*ACC_W-1:0] in_acc = 0;
    logic [R*SW_W-1:0] in_sw = 0;
    logic [T*CA_W-1:0] in_ca = 0;
    logic [$clog2(T+1)-1:0] out_token;
    logic [R*ACC_W-1:0] out_acc;
    logic [R*SW_W-1:0] out_sw;
    logic [CA_W-1:0] out_ca, out_ca_b;
    logic [R*ACC_W-1:0] out_acc_b;
    qv_drain #(.R(R), .T(T), .ACC_W(ACC_W), .SW_W(SW_W), .CA_W(CA_W)) dut (.*);
    integer n, i, c, gap, x;
    always @(posedge clk) if (out_valid) begin
        $fwrite(fo, "%0d\n", out_token);
        for (c = 0; c < R; c++) $fwrite(fo, "%0d\n", out_acc[c*ACC_W +: ACC_W]);
        for (c = 0; c < R; c++) $fwrite(fo, "%0d\n", out_sw[c*SW_W +: SW_W]);
        $fwrite(fo, "%0d\n", out_ca);
        if (pair) begin
            $fwrite(fo, "%0d\n", out_token + 1);
            for (c = 0; c < R; c++) $fwrite(fo, "%0d\n", out_acc_b[c*ACC_W +: ACC_W]);
            for (c = 0; c < R; c++) $fwrite(fo, "%0d\n", out_sw[c*SW_W +: SW_W]);
            $fwrite(fo, "%0d\n", out_ca_b);
        end
    end
    initial begin
        open_files();
        @(posedge clk); #1 rst = 0;
        r = $fscanf(fi, "%d", x); pair = x != 0;
        r = $fscanf(fi, "%d", n);
        for (i = 0; i < n; i++) begin
            r = $fscanf(fi, "%d", gap);
            load = 0;
            repeat (gap - 1) @(posedge clk);
            #1;
            for (c = 0; c < R*T; c++) begin r = $fscanf(fi, "%d", x); in_acc[c*ACC_W +: ACC_W] = ACC_W'(x); end
            for (c = 0; c < R; c++) begin r = $fscanf(fi, "%d", x); in_sw[c*SW_W +: SW_W] = SW_W'(x); end
            for (c = 0; c < T; c++) begin r = $fscanf(fi, "%d", x); in_ca[c*CA_W +: CA_W] = CA_W'(x); end
            load = 1;
            @(posedge clk); #1;
        end
        load = 0;
        repeat (T + 3) @(posedge clk);
        $fwrite(fo, "%0d\n", overrun);
        $fclose(fo);
        $finish;
    end
endmodule
