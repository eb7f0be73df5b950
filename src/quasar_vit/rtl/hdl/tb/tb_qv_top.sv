// Testbench of qv_top: one image, run from the descriptor table, DDR modelled as a DataMover.
// Input: n_steps dwords; ddr_latency bw_num bw_den fifo;
//        per step its dwords 32-bit descriptor words (written through the table's port, untimed);
//        n_beats, then per beat WB/32 words of 32 bits, low word first (DDR: every step's stream)
// DDR: a command's first beat is offered ddr_latency cycles after the step's start, then bw_num/bw_den
// beats a cycle (a credit counter, capped at fifo beats) while qv_top takes them (as tb_qv_gemm_core).
// Output: per step, per lane code of the core "token row code", then "-1 codes cycles overrun"
//         (cycles from the edge the step is launched on to the edge the next one is, or done set);
//         then "-6" and each softmax step's background run (its start to its end, as tb_qv_gemm_core);
//         then "-7 cycles": from the edge `run` is taken on to the edge `done` is set on;
//         then "-8 n" and the result port's n values "token row value".
module tb_qv_top #(parameter R = 8, parameter T = 2, parameter KP = 4, parameter TILES_MAX = 4,
                   parameter CH_MAX = 8, parameter WCH_MAX = 8, parameter WB = 32, parameter OUT_W = 21,
                   parameter BEATS_MAX = 65536, parameter RCH_MAX = 8, parameter RES_W = 20,
                   parameter SCH_MAX = 8, parameter QA_W = 26, parameter STEPS_MAX = 64);
    `include "qv_tb_io.svh"
    logic clk = 0;
    always #5 clk = ~clk;
    logic rst = 1, run = 0, busy, done;
    logic desc_wr_en = 0;
    logic [$clog2(STEPS_MAX)-1:0] desc_wr_step = 0;
    logic [4:0] desc_wr_word = 0;
    logic [31:0] desc_wr_data = 0;
    logic [$clog2(STEPS_MAX+1)-1:0] n_steps = 0;
    logic cmd_valid;
    logic [31:0] cmd_addr, cmd_beats;
    logic s_valid, s_ready;
    logic [WB-1:0] s_data;
    logic [R-1:0] res_valid, lane_valid;
    logic [$clog2(T*TILES_MAX+1)-1:0] lane_token;
    logic [R*12-1:0] lane_row;
    logic [R*OUT_W-1:0] lane_value;
    logic trace_start, trace_end, lane_pair, trace_overrun, sm_busy;
    logic [2:0] trace_mode;
    qv_top #(.R(R), .T(T), .KP(KP), .TILES_MAX(TILES_MAX), .CH_MAX(CH_MAX), .WCH_MAX(WCH_MAX), .WB(WB),
             .OUT_W(OUT_W), .RCH_MAX(RCH_MAX), .RES_W(RES_W), .SCH_MAX(SCH_MAX), .QA_W(QA_W),
             .STEPS_MAX(STEPS_MAX)) dut (.*);

    logic [WB-1:0] ddr [0:BEATS_MAX-1];
    integer n_dwords, lat, bw_num, bw_den, codes = 0, credit = 0, n_res = 0;
    longint cap, next_credit, x, cyc = 0, t0 = 0, t_run = 0, beat = 0, last = 0, t_ddr = 0;
    longint sm_t0, sm_cycles [$], res_lines [$];
    logic sm_on = 0, ddr_on = 0, loading = 1;  // (the table and DDR being written: nothing to record)
    logic signed [OUT_W-1:0] cv;
    assign s_valid = ddr_on && cyc - t_ddr >= lat && beat < last && credit >= bw_den;
    assign s_data = ddr[beat[$clog2(BEATS_MAX)-1:0]];
    // the DDR: a command restarts it (the values before the edge are seen, as tb_qv_gemm_core's start)
    always @(posedge clk) begin
        cyc <= cyc + 1;
        if (cmd_valid) begin
            t_ddr <= cyc; beat <= longint'(cmd_addr); last <= longint'(cmd_addr) + longint'(cmd_beats);
            credit <= int'(bw_num > cap ? cap : bw_num); ddr_on <= 1;
        end else if (ddr_on) begin
            next_credit = longint'(credit) + bw_num - ((s_valid && s_ready) ? bw_den : 0);
            credit <= int'(next_credit > cap ? cap : next_credit);
            if (s_valid && s_ready) beat <= beat + 1;
        end
    end
    // the per-step record
    always @(posedge clk) if (!loading) begin
        if (run) t_run <= cyc + 1;
        if (trace_start) begin
            t0 <= cyc;  // the launch edge (start_q was set on it)
            if (trace_mode == 3'd6) begin sm_t0 <= cyc; sm_on <= 1; end
        end
        for (int q = 0; q < R; q++) begin
            cv = lane_value[q*OUT_W +: OUT_W];
            if (lane_valid[q]) begin
                $fwrite(fo, "%0d %0d %0d\n", lane_token + (lane_pair && q % 2 == 1), lane_row[q*12 +: 12], cv);
                codes++;
            end
            if (res_valid[q]) begin
                res_lines.push_back(longint'(lane_token) + longint'(lane_pair && q % 2 == 1));
                res_lines.push_back(longint'(lane_row[q*12 +: 12]));
                res_lines.push_back(longint'(cv));
                n_res++;
            end
        end
        if (trace_end) begin
            $fwrite(fo, "-1 %0d %0d %0d\n", codes, cyc + 1 - t0, trace_overrun);  // (this edge launches the next)
            codes = 0;
        end
        if (sm_on && !sm_busy && cyc > sm_t0 + 1) begin sm_cycles.push_back(cyc - sm_t0 + 1); sm_on <= 0; end
        if (done) begin
            $fwrite(fo, "-6\n");
            foreach (sm_cycles[q]) $fwrite(fo, "%0d\n", sm_cycles[q]);
            $fwrite(fo, "-7 %0d\n-8 %0d\n", cyc - t_run, n_res);
            for (int q = 0; q < n_res; q++)
                $fwrite(fo, "%0d %0d %0d\n", res_lines[3*q], res_lines[3*q+1], res_lines[3*q+2]);
            $fclose(fo);
            $finish;
        end
    end
    initial begin
        open_files();
        n_steps = $bits(n_steps)'(rd()); n_dwords = int'(rd());
        lat = int'(rd()); bw_num = int'(rd()); bw_den = int'(rd());
        cap = rd() * bw_den;
        repeat (2) @(posedge clk);
        #1 rst = 0;
        for (int s = 0; s < int'(n_steps); s++)
            for (int w = 0; w < n_dwords; w++) begin
                desc_wr_en = 1; desc_wr_step = $bits(desc_wr_step)'(s); desc_wr_word = 5'(w);
                desc_wr_data = 32'(rd());
                @(posedge clk); #1;
            end
        desc_wr_en = 0;
        x = rd();
        for (longint b = 0; b < x; b++)
            for (int j = 0; j < WB / 32; j++) ddr[b[$clog2(BEATS_MAX)-1:0]][j*32 +: 32] = 32'(rd());
        loading = 0;
        @(posedge clk); #1;
        run = 1;
        @(posedge clk); #1 run = 0;
        wait (0);
    end
endmodule
