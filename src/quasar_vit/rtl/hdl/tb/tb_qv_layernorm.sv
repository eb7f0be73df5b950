// Testbench of qv_layernorm: reads NROWS, then per row "E EPS SG LO HI", E residual codes, and E
// pairs "G Bt"; per row it writes the stats latency (edges from the one taking the last pass-1
// element until busy is low), the apply latency (edges from the one taking the first pass-2
// element to the one giving the first code) and the E codes.  Both passes have an idle cycle
// before every 7th element (i % 7 == 3).  The table is read from "rsqrt.hex" in the working directory.
module tb_qv_layernorm #(parameter OUT_W = 8);
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1;
    logic [10:0] e_len;
    logic [63:0] eps;
    logic [5:0] sg;
    logic signed [OUT_W-1:0] lo, hi, code;
    logic st_valid = 0, st_last = 0, ap_valid = 0, busy, out_valid;
    logic signed [19:0] st_r, ap_r;
    logic signed [17:0] ap_g;
    logic signed [47:0] ap_bt;
    qv_layernorm #(.R_W(20), .OUT_W(OUT_W), .SUM_W(48), .RSQRT_FILE("rsqrt.hex")) dut (.*);
    string fin, fout;
    integer fi, fo, nrows, row, i, r, e, got, lat_stats;
    longint cyc = 0, t_first_in, t_first_out;
    longint x, y, rv [0:1023], gv [0:1023], bv [0:1023];
    longint codes [0:1023];
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (out_valid) begin
            if (got == 0) t_first_out = cyc;
            codes[got] = code;
            got++;
        end
    end
    initial begin
        void'($value$plusargs("in=%s", fin));
        void'($value$plusargs("out=%s", fout));
        fi = $fopen(fin, "r"); fo = $fopen(fout, "w");
        r = $fscanf(fi, "%d", nrows);
        repeat (3) @(posedge clk);
        #1 rst = 0;
        for (row = 0; row < nrows; row++) begin
            r = $fscanf(fi, "%d", x); e = int'(x); e_len = 11'(x);
            r = $fscanf(fi, "%d", x); eps = 64'(x);
            r = $fscanf(fi, "%d", x); sg = 6'(x);
            r = $fscanf(fi, "%d", x); lo = OUT_W'(x);
            r = $fscanf(fi, "%d", x); hi = OUT_W'(x);
            for (i = 0; i < e; i++) r = $fscanf(fi, "%d", rv[i]);
            for (i = 0; i < e; i++) begin r = $fscanf(fi, "%d %d", x, y); gv[i] = x; bv[i] = y; end
            // pass 1
            for (i = 0; i < e; i++) begin
                if (i % 7 == 3) begin st_valid = 0; @(posedge clk); #1; end
                st_valid = 1; st_last = (i == e - 1); st_r = 20'(rv[i]);
                @(posedge clk); #1;
            end
            st_valid = 0; st_last = 0;
            lat_stats = 0;
            while (busy) begin @(posedge clk); #1; lat_stats++; end
            // pass 2
            got = 0;
            for (i = 0; i < e; i++) begin
                if (i % 7 == 3) begin ap_valid = 0; @(posedge clk); #1; end
                ap_valid = 1; ap_r = 20'(rv[i]); ap_g = 18'(gv[i]); ap_bt = 48'(bv[i]);
                if (i == 0) t_first_in = cyc;
                @(posedge clk); #1;
            end
            ap_valid = 0;
            while (got < e) begin @(posedge clk); #1; end
            $fwrite(fo, "%0d\n%0d\n", lat_stats, t_first_out - t_first_in);
            for (i = 0; i < e; i++) $fwrite(fo, "%0d\n", codes[i]);
        end
        $fclose(fo);
        $finish;
    end
endmodule
