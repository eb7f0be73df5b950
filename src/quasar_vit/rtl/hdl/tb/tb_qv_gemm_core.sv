// Testbench of qv_gemm_core: one linear layer, with DDR modelled as a beat source.
// Input: n_tok n_tt n_ch n_rt k a_signed lo hi  ddr_latency bw_num bw_den
//        n_words, then per word: token chunk data      (the activation codes, offset)
//        n_beats, then per beat WB/32 words of 32 bits, low word first
// DDR: the first beat is offered ddr_latency cycles after start, then at bw_num/bw_den beats a
// cycle (a credit counter), whenever the core is ready.
// Output: per code "token row code"; then the number of codes, and the cycles from start to done.
module tb_qv_gemm_core #(parameter R = 4, parameter T = 2, parameter KP = 4, parameter TILES_MAX = 4,
                         parameter CH_MAX = 8, parameter WB = 32, parameter OUT_W = 21, parameter BEATS_MAX = 65536);
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1, start = 0;
    logic [$clog2(T*TILES_MAX+1)-1:0] n_tok;
    logic [$clog2(TILES_MAX+1)-1:0] n_tt;
    logic [$clog2(CH_MAX+1)-1:0] n_ch;
    logic [15:0] n_rt;
    logic [12:0] k;
    logic a_signed;
    logic signed [OUT_W-1:0] lo, hi;
    logic a_wr_en = 0;
    logic [$clog2(T*TILES_MAX)-1:0] a_wr_token;
    logic [$clog2(CH_MAX)-1:0] a_wr_chunk;
    logic [KP*6-1:0] a_wr_data;
    logic s_valid, s_ready;
    logic [WB-1:0] s_data;
    logic [R-1:0] o_valid;
    logic [$clog2(T*TILES_MAX+1)-1:0] o_token;
    logic [R*12-1:0] o_row;
    logic [R*OUT_W-1:0] o_code;
    logic busy, overrun;
    qv_gemm_core #(.R(R), .T(T), .KP(KP), .TILES_MAX(TILES_MAX), .CH_MAX(CH_MAX), .WB(WB), .OUT_W(OUT_W)) dut (.*);

    logic [WB-1:0] ddr [0:BEATS_MAX-1];
    string fin, fout;
    integer fi, fo, r, i, j, n_words, n_beats, beat = 0, lat, bw_num, bw_den, credit = 0, codes = 0;
    longint x, cyc = 0, t0;
    logic running = 0;
    logic signed [OUT_W-1:0] cv;
    assign s_valid = running && cyc - t0 >= lat && beat < n_beats && credit >= bw_den;
    assign s_data = ddr[beat];
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (running) begin
            credit <= credit + bw_num - ((s_valid && s_ready) ? bw_den : 0);
            if (s_valid && s_ready) beat <= beat + 1;
            for (int q = 0; q < R; q++) if (o_valid[q]) begin
                cv = o_code[q*OUT_W +: OUT_W];
                $fwrite(fo, "%0d %0d %0d\n", o_token, o_row[q*12 +: 12], cv);
                codes++;
            end
        end
    end
    initial begin
        void'($value$plusargs("in=%s", fin));
        void'($value$plusargs("out=%s", fout));
        fi = $fopen(fin, "r"); fo = $fopen(fout, "w");
        r = $fscanf(fi, "%d", x); n_tok = $bits(n_tok)'(x);
        r = $fscanf(fi, "%d", x); n_tt = $bits(n_tt)'(x);
        r = $fscanf(fi, "%d", x); n_ch = $bits(n_ch)'(x);
        r = $fscanf(fi, "%d", x); n_rt = 16'(x);
        r = $fscanf(fi, "%d", x); k = 13'(x);
        r = $fscanf(fi, "%d", x); a_signed = x != 0;
        r = $fscanf(fi, "%d", x); lo = OUT_W'(x);
        r = $fscanf(fi, "%d", x); hi = OUT_W'(x);
        r = $fscanf(fi, "%d %d %d", lat, bw_num, bw_den);
        r = $fscanf(fi, "%d", n_words);
        repeat (2) @(posedge clk);
        #1 rst = 0;
        for (i = 0; i < n_words; i++) begin
            r = $fscanf(fi, "%d", x); a_wr_token = $bits(a_wr_token)'(x);
            r = $fscanf(fi, "%d", x); a_wr_chunk = $bits(a_wr_chunk)'(x);
            r = $fscanf(fi, "%d", x); a_wr_data = $bits(a_wr_data)'(x);
            a_wr_en = 1;
            @(posedge clk); #1;
        end
        a_wr_en = 0;
        r = $fscanf(fi, "%d", n_beats);
        for (i = 0; i < n_beats; i++)
            for (j = 0; j < WB / 32; j++) begin r = $fscanf(fi, "%d", x); ddr[i][j*32 +: 32] = 32'(x); end
        @(posedge clk); #1;
        start = 1; t0 = cyc; running = 1;
        @(posedge clk); #1 start = 0;
        while (busy) @(posedge clk);
        $fwrite(fo, "%0d\n%0d\n%0d\n", codes, cyc - t0, overrun);
        $fclose(fo);
        $finish;
    end
endmodule
