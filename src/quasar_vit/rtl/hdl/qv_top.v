// qv_top: the accelerator: qv_gemm_core run from a descriptor table by a step sequencer, with the
// image's inputs brought in from DDR as steps of their own, so that no host work falls between steps.
//
// The driver writes the program once per subnet: one descriptor per step into the table (desc_wr_*:
// 32-bit word `desc_wr_word` of step `desc_wr_step`), and the steps' streams into DDR.  Per image
// it pulses `run` with `n_steps`; `done` pulses when the last step has ended.  For each step the
// sequencer
//   - holds the descriptor's fields on the core's configuration inputs until the step ends,
//   - asks the DMA for the step's stream (cmd_*: `cmd_beats` WB-bit beats from beat `cmd_addr`, as an
//     AXI DataMover MM2S command: the DMA must accept it when offered; a step without a stream, a
//     head's, gives none),
//   - starts the core, or for mode 7 (a load) the loader: it writes the stream's words through the
//     core's idle ports, a token's chunks in turn, into the activation memory from chunk a_base (dst 0:
//     the image's patch codes, KP 6-bit codes a word) or the residual memory from chunk r_base (dst 1:
//     the class token and positions the tokens start from, KP RES_W-bit codes a word), a word from
//     ceil(width / WB) beats, low bits first.  A load must not run beside a background softmax
//     (they share the activation memory's write port): the program puts the loads first, and a
//     load has at least one word.
// A step is launched on the first edge that sees the previous step's busy low (the edge after the
// one it fell on): the next descriptor is read from the table while a step runs.  A step with
// `emit` (the head) gives its lanes' values as results (res_valid, with lane_token/row/value);
// every other step's output stays on chip.  trace_* and sm_busy are for the testbench's record.
//
// The descriptor: the fields below, packed from bit 0 in this order (O_x the offset of field x, B_x
// its width; signed fields in two's complement).  rtl/program.py reads these lines: they are the one
// declaration of the format.  The core's fields are its configuration inputs (qv_gemm_core).
module qv_top #(
    parameter R = 4,
    parameter T = 2,
    parameter KP = 4,
    parameter TILES_MAX = 4,
    parameter CH_MAX = 8,
    parameter WCH_MAX = 8,
    parameter WB = 32,
    parameter OUT_W = 21,
    parameter RCH_MAX = 8,
    parameter RES_W = 20,
    parameter SCH_MAX = 8,
    parameter QA_W = 26,
    parameter STEPS_MAX = 64       // descriptors the table holds (a power of two)
) (
    input  wire                          clk,
    input  wire                          rst,
    // the descriptor table's write port
    input  wire                          desc_wr_en,
    input  wire [$clog2(STEPS_MAX)-1:0]  desc_wr_step,
    input  wire [4:0]                    desc_wr_word,
    input  wire [31:0]                   desc_wr_data,
    // an image: run the first n_steps descriptors
    input  wire                          run,
    input  wire [$clog2(STEPS_MAX+1)-1:0] n_steps,
    output reg                           busy,
    output reg                           done,
    // the DMA: one command a step, then its beats
    output wire                          cmd_valid,
    output wire [31:0]                   cmd_addr,
    output wire [31:0]                   cmd_beats,
    input  wire                          s_valid,
    output wire                          s_ready,
    input  wire [WB-1:0]                 s_data,
    // the core's lanes, every step (as qv_gemm_core's o_*); res_valid: those of an `emit` step (the results)
    output wire [R-1:0]                  lane_valid,
    output wire [$clog2(T*TILES_MAX+1)-1:0] lane_token,
    output wire [R*12-1:0]               lane_row,
    output wire [R*OUT_W-1:0]            lane_value,
    output wire                          lane_pair,
    output wire [R-1:0]                  res_valid,
    // for the testbench: a step's launch and end strobes, its mode, the core's overrun, the softmax's run
    output wire                          trace_start,
    output wire                          trace_end,
    output wire [2:0]                    trace_mode,
    output wire                          trace_overrun,
    output wire                          sm_busy
);
    localparam O_N_TOK = 0,                        B_N_TOK = 12;
    localparam O_N_TT = O_N_TOK + B_N_TOK,         B_N_TT = 8;
    localparam O_N_CH = O_N_TT + B_N_TT,           B_N_CH = 12;
    localparam O_N_RT = O_N_CH + B_N_CH,           B_N_RT = 16;
    localparam O_K = O_N_RT + B_N_RT,              B_K = 13;
    localparam O_A_SIGNED = O_K + B_K,             B_A_SIGNED = 1;
    localparam O_O_SIGNED = O_A_SIGNED + B_A_SIGNED, B_O_SIGNED = 1;
    localparam O_MODE = O_O_SIGNED + B_O_SIGNED,   B_MODE = 3;
    localparam O_A_BASE = O_MODE + B_MODE,         B_A_BASE = 12;
    localparam O_O_BASE = O_A_BASE + B_A_BASE,     B_O_BASE = 12;
    localparam O_R_BASE = O_O_BASE + B_O_BASE,     B_R_BASE = 12;
    localparam O_E_LEN = O_R_BASE + B_R_BASE,      B_E_LEN = 11;
    localparam O_EPS = O_E_LEN + B_E_LEN,          B_EPS = 64;
    localparam O_LO = O_EPS + B_EPS,               B_LO = 32;
    localparam O_HI = O_LO + B_LO,                 B_HI = 32;
    localparam O_SKIP_FIRST = O_HI + B_HI,         B_SKIP_FIRST = 1;
    localparam O_KV_EN = O_SKIP_FIRST + B_SKIP_FIRST, B_KV_EN = 1;
    localparam O_K_LO = O_KV_EN + B_KV_EN,         B_K_LO = 12;
    localparam O_V_LO = O_K_LO + B_K_LO,           B_V_LO = 12;
    localparam O_KV_CH = O_V_LO + B_V_LO,          B_KV_CH = 12;
    localparam O_SRC = O_KV_CH + B_KV_CH,          B_SRC = 12;
    localparam O_N_ROWS = O_SRC + B_SRC,           B_N_ROWS = 12;
    localparam O_ROW_BASE = O_N_ROWS + B_N_ROWS,   B_ROW_BASE = 12;
    localparam O_AT_MULT = O_ROW_BASE + B_ROW_BASE, B_AT_MULT = 18;
    localparam O_AT_OFFSET = O_AT_MULT + B_AT_MULT, B_AT_OFFSET = 48;
    localparam O_AT_SHIFT = O_AT_OFFSET + B_AT_OFFSET, B_AT_SHIFT = 6;
    localparam O_SC_BANK = O_AT_SHIFT + B_AT_SHIFT, B_SC_BANK = 1;
    localparam O_EMIT = O_SC_BANK + B_SC_BANK,     B_EMIT = 1;
    localparam O_DST = O_EMIT + B_EMIT,            B_DST = 1;
    localparam O_ADDR = O_DST + B_DST,             B_ADDR = 32;
    localparam O_BEATS = O_ADDR + B_ADDR,          B_BEATS = 32;
    localparam DB = O_BEATS + B_BEATS;             // the descriptor's bits
    localparam DWORDS = (DB + 31) / 32;
    localparam SW = $clog2(STEPS_MAX);
    localparam TOKW = $clog2(T * TILES_MAX + 1);
    localparam MODE_LOAD = 3'd7;

    // ---- the descriptor table: a 32-bit memory per descriptor word, read together
    reg  [SW-1:0] raddr;
    wire [DWORDS*32-1:0] q;
    genvar g;
    generate
        for (g = 0; g < DWORDS; g = g + 1) begin : table_word
            reg [31:0] mem [0:STEPS_MAX-1];
            reg [31:0] qw;
            always @(posedge clk) begin
                if (desc_wr_en && desc_wr_word == g) mem[desc_wr_step] <= desc_wr_data;
                qw <= mem[raddr];
            end
            assign q[g*32 +: 32] = qw;
        end
    endgenerate

    // ---- the step's descriptor, held while it runs
    reg [DB-1:0] d;
    wire [2:0] mode = d[O_MODE +: B_MODE];
    wire load = mode == MODE_LOAD;
    wire dst = d[O_DST];
    wire core_busy, ld_busy_w;
    wire unit_busy = load ? ld_busy_w : core_busy;

    // ---- the sequencer: IDLE -> FETCH (the table's read of step 0) -> LAUNCH -> WAIT, step by step
    localparam S_IDLE = 2'd0, S_FETCH = 2'd1, S_LAUNCH = 2'd2, S_WAIT = 2'd3;
    reg [1:0] st;
    reg start_q;
    reg [SW:0] idx, n_q;
    wire step_end = st == S_WAIT && !start_q && !unit_busy;
    always @(posedge clk) begin
        start_q <= 1'b0;
        done <= 1'b0;
        if (rst) begin
            st <= S_IDLE; busy <= 1'b0; idx <= 0; raddr <= 0;
        end else case (st)
            S_IDLE: if (run && n_steps == 0) done <= 1'b1;  // an empty program is done at once
            else if (run) begin
                raddr <= 0; idx <= 0; n_q <= n_steps; busy <= 1'b1; st <= S_FETCH;
            end
            S_FETCH: st <= S_LAUNCH;
            S_LAUNCH: begin d <= q[DB-1:0]; start_q <= 1'b1; raddr <= raddr + 1'b1; st <= S_WAIT; end
            default: if (step_end) begin
                if (idx + 1'b1 == n_q) begin
                    st <= S_IDLE; busy <= 1'b0; done <= 1'b1;
                end else begin
                    d <= q[DB-1:0]; start_q <= 1'b1; raddr <= raddr + 1'b1; idx <= idx + 1'b1;
                end
            end
        endcase
    end
    assign cmd_valid = start_q && d[O_BEATS +: B_BEATS] != 0;  // (a DataMover takes no empty command)
    assign cmd_addr = d[O_ADDR +: B_ADDR];
    assign cmd_beats = d[O_BEATS +: B_BEATS];

    // ---- the loader (mode 7): stream words into the activation or the residual memory
    localparam AWD = KP * 6, RWD = KP * RES_W;
    localparam BPW_A = (AWD + WB - 1) / WB, BPW_R = (RWD + WB - 1) / WB;
    localparam BPW = BPW_R > BPW_A ? BPW_R : BPW_A;
    localparam BCW = $clog2(BPW + 1);
    wire [B_N_TOK-1:0] ld_n_tok = d[O_N_TOK +: B_N_TOK];
    wire [B_N_CH-1:0] ld_n_ch = d[O_N_CH +: B_N_CH];
    wire [BCW-1:0] bpw = dst ? BCW'(BPW_R) : BCW'(BPW_A);
    reg ld_busy, wr_pend;
    reg [BPW*WB-1:0] word;
    reg [BCW-1:0] bc;
    reg [B_N_TOK-1:0] tok, wr_tok;
    reg [B_N_CH-1:0] ch, wr_ch;
    wire ld_rx_done = tok == ld_n_tok;           // every word's beats are in
    wire ld_ready = ld_busy && !ld_rx_done;
    wire ld_take = ld_ready && s_valid;
    always @(posedge clk) begin
        if (rst) begin
            ld_busy <= 1'b0; wr_pend <= 1'b0;
        end else if (start_q && load) begin
            ld_busy <= 1'b1; wr_pend <= 1'b0; tok <= 0; ch <= 0; bc <= 0;
        end else begin
            wr_pend <= 1'b0;
            if (ld_take) begin
                word[bc*WB +: WB] <= s_data;
                if (bc == bpw - 1'b1) begin
                    bc <= 0; wr_pend <= 1'b1; wr_tok <= tok; wr_ch <= ch;
                    if (ch == ld_n_ch - 1'b1) begin ch <= 0; tok <= tok + 1'b1; end
                    else ch <= ch + 1'b1;
                end else bc <= bc + 1'b1;
            end
            if (ld_busy && ld_rx_done && wr_pend) ld_busy <= 1'b0;  // the last word is written on this edge
        end
    end
    assign ld_busy_w = ld_busy;
    wire [$clog2(T*TILES_MAX)-1:0] wr_token = wr_tok[$clog2(T*TILES_MAX)-1:0];

    // ---- the core
    wire [KP*RES_W-1:0] r_rd_data, sc_rd_data;
    wire [T*KP*6-1:0] dbg_data;
    wire [QA_W-1:0] sm_inv;
    wire core_s_ready;
    qv_gemm_core #(.R(R), .T(T), .KP(KP), .TILES_MAX(TILES_MAX), .CH_MAX(CH_MAX), .WCH_MAX(WCH_MAX), .WB(WB),
                   .OUT_W(OUT_W), .RCH_MAX(RCH_MAX), .RES_W(RES_W), .SCH_MAX(SCH_MAX), .QA_W(QA_W)) core (
        .clk(clk), .rst(rst), .start(start_q && !load),
        .n_tok(d[O_N_TOK +: TOKW]),
        .n_tt(d[O_N_TT +: $clog2(TILES_MAX+1)]),
        .n_ch(d[O_N_CH +: $clog2(WCH_MAX+1)]),
        .n_rt(d[O_N_RT +: 16]),
        .k(d[O_K +: 13]),
        .a_signed(d[O_A_SIGNED]),
        .o_signed(d[O_O_SIGNED]),
        .mode(mode),
        .sc_bank(d[O_SC_BANK]),
        .skip_first(d[O_SKIP_FIRST]),
        .kv_en(d[O_KV_EN]),
        .k_lo(d[O_K_LO +: $clog2(CH_MAX)]),
        .v_lo(d[O_V_LO +: $clog2(CH_MAX)]),
        .kv_ch(d[O_KV_CH +: $clog2(RCH_MAX+1)]),
        .src(d[O_SRC +: 12]),
        .n_rows(d[O_N_ROWS +: 12]),
        .row_base(d[O_ROW_BASE +: 12]),
        .at_mult(d[O_AT_MULT +: 18]),
        .at_offset(d[O_AT_OFFSET +: 48]),
        .at_shift(d[O_AT_SHIFT +: 6]),
        .r_base(d[O_R_BASE +: $clog2(RCH_MAX)]),
        .e_len(d[O_E_LEN +: 11]),
        .eps(d[O_EPS +: 64]),
        .a_base(d[O_A_BASE +: $clog2(CH_MAX)]),
        .o_base(d[O_O_BASE +: $clog2(CH_MAX)]),
        .lo(d[O_LO +: OUT_W]),
        .hi(d[O_HI +: OUT_W]),
        .dbg_tile({$clog2(TILES_MAX){1'b0}}),
        .dbg_chunk({$clog2(CH_MAX){1'b0}}),
        .dbg_data(dbg_data),
        .r_wr_en(wr_pend && dst),
        .r_token(wr_token),
        .r_chunk(d[O_R_BASE +: $clog2(RCH_MAX)] + wr_ch[$clog2(RCH_MAX)-1:0]),
        .r_wr_data(word[RWD-1:0]),
        .r_rd_data(r_rd_data),
        .sc_chunk({$clog2(SCH_MAX){1'b0}}),
        .sc_wr_en(1'b0),
        .sc_wr_data({(KP*RES_W){1'b0}}),
        .sc_rd_data(sc_rd_data),
        .sm_inv(sm_inv),
        .a_wr_en(wr_pend && !dst),
        .a_wr_token(wr_token),
        .a_wr_chunk(d[O_A_BASE +: $clog2(CH_MAX)] + wr_ch[$clog2(CH_MAX)-1:0]),
        .a_wr_data(word[AWD-1:0]),
        .s_valid(s_valid && !load),
        .s_ready(core_s_ready),
        .s_data(s_data),
        .o_valid(lane_valid), .o_token(lane_token), .o_row(lane_row), .o_code(lane_value), .o_pair(lane_pair),
        .busy(core_busy), .sm_busy(sm_busy), .overrun(trace_overrun)
    );
    assign s_ready = load ? ld_ready : core_s_ready;

    assign res_valid = d[O_EMIT] ? lane_valid : {R{1'b0}};
    assign trace_start = start_q;
    assign trace_end = step_end;
    assign trace_mode = mode;
endmodule
