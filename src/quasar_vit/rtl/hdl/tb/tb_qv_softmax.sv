// Testbench of qv_softmax: reads R, then per row "N M S Qa hi gaps" and N scores; streams each row
// three times (pass 1, 2, 3; with gaps != 0 an idle cycle after every third element) and the next
// row's pass 1 right after pass 3.  Writes per row: the N codes, then DIV_WAIT (cycles from taking
// the last pass-2 element to taking the first pass-3 element), the latency (cycles from taking
// the first pass-3 element to seeing its code), 1 if out_last marked exactly the row's last code,
// and the unit's row sum s and reciprocal inv (read hierarchically from dut.dv_s, dut.inv).
module tb_qv_softmax #(parameter A_W = 21, parameter QA_W = 26, parameter S_W = 27, parameter CODE_W = 8);
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1, in_valid = 0, in_last = 0, in_ready, out_valid, out_last, busy;
    logic signed [A_W-1:0] a = 0;
    logic signed [17:0] mult = 0;
    logic [5:0] shift = 1;
    logic [QA_W-1:0] recip = 0;
    logic [CODE_W-1:0] hi = 0, code;
    qv_softmax #(.A_W(A_W), .QA_W(QA_W), .S_W(S_W), .CODE_W(CODE_W)) dut (.*);

    localparam MAXR = 64, MAXN = 4096;
    string fin, fout;
    integer fi, fo, r, nrows, row, i;
    longint cyc = 0;
    longint rn [0:MAXR-1];
    longint rm [0:MAXR-1], rs [0:MAXR-1], rq [0:MAXR-1], rh [0:MAXR-1], rg [0:MAXR-1];
    longint sc [0:MAXR-1][0:MAXN-1];
    longint codes [0:MAXR-1][0:MAXN-1];
    longint t_p2_last [0:MAXR-1], t_p3_first [0:MAXR-1], t_out_first [0:MAXR-1];
    longint rsum [0:MAXR-1], rinv [0:MAXR-1];
    integer last_ok [0:MAXR-1];
    integer orow = 0, oidx = 0;

    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (out_valid) begin
            if (oidx == 0) t_out_first[orow] = cyc;
            codes[orow][oidx] = longint'(code);
            if (out_last != (oidx == rn[orow] - 1)) last_ok[orow] = 0;
            if (oidx == rn[orow] - 1) begin oidx = 0; orow++; end
            else oidx++;
        end
    end

    // drives one element; returns the cycle it was taken (the TB stays 1 time unit after an edge)
    task automatic send(input longint v, input bit last, output longint when);
        in_valid = 1; a = A_W'(v); in_last = last;
        while (!in_ready) begin @(posedge clk); #1; end
        when = cyc;
        @(posedge clk); #1;
        in_valid = 0; in_last = 0;
    endtask

    task automatic stream(input integer k, input integer pass);
        longint when;
        for (int j = 0; j < rn[k]; j++) begin
            send(sc[k][j], j == rn[k] - 1, when);
            if (pass == 2 && j == rn[k] - 1) t_p2_last[k] = when;
            if (pass == 3 && j == 0) begin t_p3_first[k] = when; rsum[k] = longint'(dut.dv_s); rinv[k] = longint'(dut.inv); end
            if (rg[k] != 0 && j % 3 == 2) begin @(posedge clk); #1; end
        end
    endtask

    initial begin
        void'($value$plusargs("in=%s", fin));
        void'($value$plusargs("out=%s", fout));
        fi = $fopen(fin, "r"); fo = $fopen(fout, "w");
        r = $fscanf(fi, "%d", nrows);
        for (row = 0; row < nrows; row++) begin
            r = $fscanf(fi, "%d %d %d %d %d %d", rn[row], rm[row], rs[row], rq[row], rh[row], rg[row]);
            for (i = 0; i < rn[row]; i++) r = $fscanf(fi, "%d", sc[row][i]);
            last_ok[row] = 1;
        end
        repeat (3) @(posedge clk);
        #1 rst = 0;
        for (row = 0; row < nrows; row++) begin
            // new constants only once the previous row's codes are out (same ones: no wait, the rows overlap)
            if (row > 0 && (rm[row] != rm[row-1] || rs[row] != rs[row-1] || rq[row] != rq[row-1] || rh[row] != rh[row-1]))
                while (orow < row) begin @(posedge clk); #1; end
            mult = 18'(rm[row]); shift = 6'(rs[row]); recip = QA_W'(rq[row]); hi = CODE_W'(rh[row]);
            stream(row, 1);
            stream(row, 2);
            stream(row, 3);
        end
        while (orow < nrows) begin @(posedge clk); #1; end
        for (row = 0; row < nrows; row++) begin
            for (i = 0; i < rn[row]; i++) $fwrite(fo, "%0d\n", codes[row][i]);
            $fwrite(fo, "%0d\n%0d\n%0d\n%0d\n%0d\n", t_p3_first[row] - t_p2_last[row],
                    t_out_first[row] - t_p3_first[row], last_ok[row], rsum[row], rinv[row]);
        end
        $fclose(fo);
        $finish;
    end
endmodule
