// Testbench of qv_gemm_core: a chain of linear layers, with DDR modelled as a beat source.
// Input: n_layers; ddr_latency bw_num bw_den fifo;
//        n_words, then per word "token chunk data": input codes (offset) into the activation memory
//        n_rwords, then per word "token chunk" and RWN 32-bit parts: residual codes (two's complement)
//        n_swords, the same for the score memory
//        per layer: n_tok n_tt n_ch n_rt k a_signed o_signed mode a_base o_base r_base e_len eps lo hi,
//                   skip_first kv_en k_lo v_lo kv_ch src n_rows row_base at_mult at_offset at_shift sc_bank (the core's
//                   fields of qv_top's descriptor, in its order), n_beats,
//                   then per beat WB/32 words of 32 bits, low word first
//        the dumps: activation first chunk, tiles, chunks, the score bank; residual tokens, chunks; score tokens, chunks;
//        inv tokens
// DDR: a layer's first beat is offered ddr_latency cycles after its start, then bw_num/bw_den
// beats a cycle (a credit counter), whenever the core is ready; the credit is capped at fifo
// beats (the DDR runs ahead of the core by at most that many beats).
// Output: per layer, per code "token row code", then "-1 codes cycles overrun";
//         then "-6" and each softmax step's cycles from its start to the end of its background run;
//         then "-2" and the dumped activation memory, per (tile, chunk) its T words;
//         then "-3" and the residual memory, per (token, chunk) RWN 32-bit parts;
//         then "-4" and the score memory, likewise; then "-5" and the softmax's inv of each token.
module tb_qv_gemm_core #(parameter R = 8, parameter T = 2, parameter KP = 4, parameter TILES_MAX = 4,
                         parameter CH_MAX = 8, parameter WCH_MAX = 8, parameter WB = 32, parameter OUT_W = 21,
                         parameter BEATS_MAX = 65536, parameter RCH_MAX = 8, parameter RES_W = 20,
                         parameter SCH_MAX = 8, parameter QA_W = 26);
    `include "qv_tb_io.svh"
    localparam RWN = (KP * RES_W + 31) / 32;
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1, start = 0;
    logic [$clog2(T*TILES_MAX+1)-1:0] n_tok;
    logic [$clog2(TILES_MAX+1)-1:0] n_tt;
    logic [$clog2(WCH_MAX+1)-1:0] n_ch;
    logic [$clog2(CH_MAX)-1:0] a_base, o_base;
    logic [15:0] n_rt;
    logic [12:0] k;
    logic a_signed, o_signed;
    logic [2:0] mode;
    logic kv_en, skip_first;
    logic [$clog2(CH_MAX)-1:0] k_lo, v_lo;
    logic [$clog2(RCH_MAX+1)-1:0] kv_ch;
    logic [11:0] src, n_rows, row_base;
    logic signed [17:0] at_mult;
    logic signed [47:0] at_offset;
    logic [5:0] at_shift;
    logic [$clog2(SCH_MAX)-1:0] sc_chunk = 0;
    logic [KP*RES_W-1:0] sc_rd_data, sc_wr_data = 0;
    logic sc_wr_en = 0, sc_bank = 0;
    logic [QA_W-1:0] sm_inv;
    logic [10:0] e_len;
    logic [63:0] eps;
    logic [$clog2(RCH_MAX)-1:0] r_base, r_chunk = 0;
    logic r_wr_en = 0;
    logic [$clog2(T*TILES_MAX)-1:0] r_token = 0;
    logic [KP*RES_W-1:0] r_wr_data = 0, r_rd_data;
    logic [RWN*32-1:0] rbuf;
    logic signed [OUT_W-1:0] lo, hi;
    logic a_wr_en = 0;
    logic [$clog2(TILES_MAX)-1:0] dbg_tile = 0;
    logic [$clog2(CH_MAX)-1:0] dbg_chunk = 0;
    logic [T*KP*6-1:0] dbg_data;
    logic [$clog2(T*TILES_MAX)-1:0] a_wr_token;
    logic [$clog2(CH_MAX)-1:0] a_wr_chunk;
    logic [KP*6-1:0] a_wr_data;
    logic s_valid, s_ready;
    logic [WB-1:0] s_data;
    logic [R-1:0] o_valid;
    logic [$clog2(T*TILES_MAX+1)-1:0] o_token;
    logic [R*12-1:0] o_row;
    logic [R*OUT_W-1:0] o_code;
    logic o_pair, sm_busy;
    // the softmax steps' background runs, counted as the steps are: from the start edge to the first
    // edge seen with sm_busy low, inclusive (this block sees the values from before the edge)
    longint sm_t0, sm_cycles [$];
    logic sm_on = 0;
    always @(posedge clk)
        if (sm_on && !sm_busy && cyc > sm_t0 + 1) begin sm_cycles.push_back(cyc - sm_t0 + 1); sm_on <= 0; end
    logic busy, overrun;
    qv_gemm_core #(.R(R), .T(T), .KP(KP), .TILES_MAX(TILES_MAX), .CH_MAX(CH_MAX), .WCH_MAX(WCH_MAX), .WB(WB),
                   .OUT_W(OUT_W), .RCH_MAX(RCH_MAX), .RES_W(RES_W), .SCH_MAX(SCH_MAX), .QA_W(QA_W)) dut (.*);

    logic [WB-1:0] ddr [0:BEATS_MAX-1];
    integer i, j, n_layers, layer, n_words, n_beats, beat, lat, bw_num, bw_den, credit, codes;
    longint cap, next_credit;
    integer d_base, d_tiles, d_chunks, n_rwords;
    longint x, cyc = 0, t0;
    logic running = 0;
    logic signed [OUT_W-1:0] cv;
    assign s_valid = running && cyc - t0 >= lat && beat < n_beats && credit >= bw_den;
    assign s_data = ddr[beat];
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (running) begin
            next_credit = longint'(credit) + bw_num - ((s_valid && s_ready) ? bw_den : 0);
            credit <= int'(next_credit > cap ? cap : next_credit);
            if (s_valid && s_ready) beat <= beat + 1;
            for (int q = 0; q < R; q++) if (o_valid[q]) begin
                cv = o_code[q*OUT_W +: OUT_W];
                $fwrite(fo, "%0d %0d %0d\n", o_token + (o_pair && q % 2 == 1), o_row[q*12 +: 12], cv);
                codes++;
            end
        end
    end
    // the residual or the score memory's words: a count, then per word "token chunk" and RWN parts
    task automatic preload_words(input bit scores);
        integer n_w = int'(rd());
        for (int w = 0; w < n_w; w++) begin
            longint c;
            r_token = $bits(r_token)'(rd());
            c = rd(); r_chunk = $bits(r_chunk)'(c); sc_chunk = $bits(sc_chunk)'(c);
            for (int q = 0; q < RWN; q++) rbuf[q*32 +: 32] = 32'(rd());
            r_wr_data = rbuf[KP*RES_W-1:0]; sc_wr_data = rbuf[KP*RES_W-1:0];
            r_wr_en = !scores; sc_wr_en = scores;
            @(posedge clk); #1;
        end
        r_wr_en = 0; sc_wr_en = 0;
    endtask
    // "-3" / "-4" and the residual or the score memory: per (token, chunk) RWN 32-bit parts
    task automatic dump_words(input bit scores);
        integer n_tok_d = int'(rd()), n_ch_d = int'(rd());
        $fwrite(fo, "%0d\n", scores ? -4 : -3);
        for (int t = 0; t < n_tok_d; t++)
            for (int c = 0; c < n_ch_d; c++) begin
                r_token = $bits(r_token)'(t); r_chunk = $bits(r_chunk)'(c); sc_chunk = $bits(sc_chunk)'(c);
                @(posedge clk); #1;
                rbuf = (RWN*32)'(scores ? sc_rd_data : r_rd_data);
                for (int q = 0; q < RWN; q++) $fwrite(fo, "%0d\n", rbuf[q*32 +: 32]);
            end
    endtask
    initial begin
        open_files();
        n_layers = int'(rd()); lat = int'(rd()); bw_num = int'(rd()); bw_den = int'(rd());
        cap = rd() * bw_den;
        n_words = int'(rd());
        repeat (2) @(posedge clk);
        #1 rst = 0;
        for (i = 0; i < n_words; i++) begin
            a_wr_token = $bits(a_wr_token)'(rd()); a_wr_chunk = $bits(a_wr_chunk)'(rd());
            a_wr_data = $bits(a_wr_data)'(rd());
            a_wr_en = 1;
            @(posedge clk); #1;
        end
        a_wr_en = 0;
        preload_words(0);  // the residual memory
        preload_words(1);  // the score memory
        for (layer = 0; layer < n_layers; layer++) begin
            n_tok = $bits(n_tok)'(rd()); n_tt = $bits(n_tt)'(rd()); n_ch = $bits(n_ch)'(rd());
            n_rt = 16'(rd()); k = 13'(rd()); a_signed = rd() != 0; o_signed = rd() != 0; mode = 3'(rd());
            a_base = $bits(a_base)'(rd()); o_base = $bits(o_base)'(rd()); r_base = $bits(r_base)'(rd());
            e_len = 11'(rd()); eps = 64'(rd());
            lo = OUT_W'(rd()); hi = OUT_W'(rd());
            skip_first = rd() != 0; kv_en = rd() != 0; k_lo = $bits(k_lo)'(rd()); v_lo = $bits(v_lo)'(rd()); kv_ch = $bits(kv_ch)'(rd());
            src = 12'(rd()); n_rows = 12'(rd()); row_base = 12'(rd());
            at_mult = 18'(rd()); at_offset = 48'(rd()); at_shift = 6'(rd()); sc_bank = rd() != 0;
            n_beats = int'(rd());
            for (i = 0; i < n_beats; i++)
                for (j = 0; j < WB / 32; j++) ddr[i][j*32 +: 32] = 32'(rd());
            beat = 0; credit = 0; codes = 0;
            @(posedge clk); #1;
            start = 1; t0 = cyc; running = 1;
            if (mode == 3'd6) begin sm_t0 = cyc; sm_on = 1; end
            @(posedge clk); #1 start = 0;
            while (busy) @(posedge clk);
            #1 running = 0;
            $fwrite(fo, "-1 %0d %0d %0d\n", codes, cyc - t0, overrun);
        end
        while (sm_busy || sm_on) @(posedge clk);
        #1 $fwrite(fo, "-6\n");
        foreach (sm_cycles[q]) $fwrite(fo, "%0d\n", sm_cycles[q]);
        d_base = int'(rd()); d_tiles = int'(rd()); d_chunks = int'(rd()); sc_bank = rd() != 0;
        $fwrite(fo, "-2\n");
        for (i = 0; i < d_tiles; i++)
            for (j = 0; j < d_chunks; j++) begin
                dbg_tile = $bits(dbg_tile)'(i); dbg_chunk = $bits(dbg_chunk)'(d_base + j);
                @(posedge clk); #1;
                for (int b = 0; b < T; b++) $fwrite(fo, "%0d\n", dbg_data[b*KP*6 +: KP*6]);
            end
        dump_words(0);  // -3: the residual memory
        dump_words(1);  // -4: the score memory
        $fwrite(fo, "-5\n");
        d_tiles = int'(rd());
        for (i = 0; i < d_tiles; i++) begin
            r_token = $bits(r_token)'(i);
            #1 $fwrite(fo, "%0d\n", sm_inv);
        end
        $fclose(fo);
        $finish;
    end
endmodule
