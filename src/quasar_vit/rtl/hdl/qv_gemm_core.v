// qv_gemm_core: one linear layer on the W4A6 array: weights streamed in, codes out.
//
//   for each row tile (R nibble-row slots, weights from the stream into qv_weight_buf)
//     for each token tile (T tokens of qv_act_mem)
//       for each k-chunk: one cycle of qv_dot_array
//   each finished tile -> qv_drain -> R output lanes (qv_outstage), one token a cycle
// The array never waits for the output side when a tile has at least T chunks; with fewer, the
// sequencer leaves T - n_ch idle cycles after the tile (qv_drain takes a tile every T cycles).
// A row tile starts when its weights are in; its half of the weight buffer is freed when its last
// token has entered the lanes, so the stream fills one half while the array reads the other.
// Lane j takes slot j's sums (and slot j+1's, the low nibble of an 8-bit row) and the slot's
// constants; a slot with out_en low (a low nibble, a pad) gives no output.
// The lanes' codes of a token are compacted (slot -> output position) and written, as whole words,
// into the activation memory (qv_act_mem) that the layer reads too: a layer reads the chunks from
// `a_base` and writes its outputs from chunk `o_base`, so the next layer reads what this one
// wrote, with no host in between (the memory holds every matrix of a block side by side).
// Modes: 3 is a LayerNorm step: qv_ln_path normalises the residual memory's rows and hands the lanes
// each token's R values Z a cycle in place of the drain, with the channels' gains and offsets as
// slot constants (a constants-only stream, n_ch = 0); the codes go to the activation memory.
// 0 the lanes' codes go to the activation memory; 2 they are GELU table indices, and the
// table's codes go there (the 1024-entry table arrives at the head of the layer's stream, 8 bits an
// entry); 1 they are residual updates, added (saturating) to the residual memory's codes of the same
// positions, read and written back (qv_res_mem, chunks from r_base).
// 4 is Q K^T of a head: its K rows (the K memory, which a qkv layer with kv_en fills with the K
// third of its output) are the stationary operand, made on chip by qv_kv_loader in place of the
// stream; the query tokens are the layer's input (Q from chunk a_base); the lanes' values (the
// scores: an identity requantiser) go to the score memory, token by key.  5 is P V of a head: V^T
// rows (qv_vt_mem, filled by the same qkv layer) are the stationary operand, P the input; the
// codes go to the activation memory at output row row_base + d (the head's place in proj's input).
// 6 is the softmax of a head (qv_sm_path): the score memory's rows -> P codes into the activation
// memory from o_base, with intops.softmax's M, S and Qa as at_mult, at_shift and at_offset[QA_W-1:0].
// Q K^T's rows (keys) are "8-bit" rows of two slots, so one token uses half the lanes: the drain
// hands the lanes two tokens a cycle (`pair`; T is even), the even lanes token 2m and the odd
// ones 2m + 1 (lane 2i + 1 takes slots 2i and 2i + 1 of token 2m + 1; the loader gives both slots
// of a row the same constants), and the score memory has a bank for each token parity.
// Q K^T hands the softmax each row's maximum as it writes the scores; at_offset[47] says the
// maxima are known (set after Q K^T), else the softmax finds them in a pass of its own.
// The softmax runs in the background: its step ends (busy falls) as soon as it has started, so that
// Q K^T of the next head runs beside it, into the other bank of the score memory and the maxima
// (`sc_bank`: the bank a Q K^T writes, a softmax reads, and the idle port uses).  Any other step
// waits for a running softmax before its units start (`go`): P V reads its P, and the others would
// share the activation memory's write port.  `sm_busy` says a softmax still runs.
// Also out, for the testbench: per cycle a mask of lanes with a code, the token, and per lane the
// logical row and code.  A debug read port reads either memory while the core is idle.
module qv_gemm_core #(
    parameter R = 4,
    parameter T = 2,
    parameter KP = 4,
    parameter TILES_MAX = 4,
    parameter CH_MAX = 8,          // chunks of the activation memory (every matrix side by side)
    parameter WCH_MAX = 8,         // k-chunks of a layer: K <= KP * WCH_MAX
    parameter WB = 32,
    parameter OUT_W = 21,
    parameter W = R / KP,          // words a token's outputs of one row tile fill
    parameter RCH_MAX = 8,         // chunks of the residual memory (embed dim / KP)
    parameter RES_W = 20,          // residual code width
    parameter SCH_MAX = 8,         // key chunks of the score memory (T * TILES_MAX / KP, a power of two >= W)
    parameter QA_W = 26            // the softmax's Qa bits (the divider's stages: QA_W + 17)
) (
    input  wire                          clk,
    input  wire                          rst,
    input  wire                          start,
    // layer configuration, held from start to done
    input  wire [$clog2(T*TILES_MAX+1)-1:0] n_tok,
    input  wire [$clog2(TILES_MAX+1)-1:0] n_tt,      // token tiles: ceil(n_tok / T)
    input  wire [$clog2(WCH_MAX+1)-1:0]  n_ch,       // k-chunks: K / KP
    input  wire [15:0]                   n_rt,       // row tiles
    input  wire [12:0]                   k,          // K
    input  wire                          a_signed,
    input  wire                          o_signed,   // the output codes are signed (stored offset by 32)
    input  wire [2:0]                    mode,       // 0 codes, 1 residual add, 2 GELU, 3 LayerNorm, 4 Q K^T, 5 P V, 6 softmax
    input  wire                          sc_bank,    // the score memory's bank (modes 4, 6, the idle port)
    // attention: a qkv layer (mode 0) with kv_en writes its K third (output chunks k_lo ..
    // k_lo + kv_ch - 1) to the K memory and its V third (from v_lo) to qv_vt_mem; modes 4/5 read
    // them from src (4: the head's first K chunk; 5: its first dim), n_rows rows (keys; dims)
    input  wire                          skip_first, // token 0 gives no output (the patch embedding: the class token)
    input  wire                          kv_en,
    input  wire [$clog2(CH_MAX)-1:0]     k_lo,
    input  wire [$clog2(CH_MAX)-1:0]     v_lo,
    input  wire [$clog2(RCH_MAX+1)-1:0]  kv_ch,
    input  wire [11:0]                   src,
    input  wire [11:0]                   n_rows,
    input  wire [11:0]                   row_base,
    input  wire signed [17:0]            at_mult,    // modes 4/5: the one requantiser of every row
    input  wire signed [47:0]            at_offset,
    input  wire [5:0]                    at_shift,
    input  wire [$clog2(RCH_MAX)-1:0]    r_base,     // the residual's first chunk
    input  wire [10:0]                   e_len,      // LayerNorm (mode 3): E
    input  wire [63:0]                   eps,        // LayerNorm: EPS
    input  wire [$clog2(CH_MAX)-1:0]     a_base,     // the input's first chunk in the activation memory
    input  wire [$clog2(CH_MAX)-1:0]     o_base,     // the output's first chunk
    input  wire signed [OUT_W-1:0]       lo,
    input  wire signed [OUT_W-1:0]       hi,
    // activations in (one word a cycle), and the idle-time debug read
    input  wire [$clog2(TILES_MAX)-1:0]  dbg_tile,
    input  wire [$clog2(CH_MAX)-1:0]     dbg_chunk,
    output wire [T*KP*6-1:0]             dbg_data,
    // the residual memory's port while idle: preload (a word a cycle) and read back
    input  wire                          r_wr_en,
    input  wire [$clog2(T*TILES_MAX)-1:0] r_token,
    input  wire [$clog2(RCH_MAX)-1:0]    r_chunk,
    input  wire [KP*RES_W-1:0]           r_wr_data,
    output wire [KP*RES_W-1:0]           r_rd_data,
    // the score memory's port while idle (token r_token): preload, read back; and the softmax's inv
    input  wire [$clog2(SCH_MAX)-1:0]    sc_chunk,
    input  wire                          sc_wr_en,
    input  wire [KP*RES_W-1:0]           sc_wr_data,
    output wire [KP*RES_W-1:0]           sc_rd_data,
    output wire [QA_W-1:0]               sm_inv,
    input  wire                          a_wr_en,
    input  wire [$clog2(T*TILES_MAX)-1:0] a_wr_token,
    input  wire [$clog2(CH_MAX)-1:0]     a_wr_chunk,
    input  wire [KP*6-1:0]               a_wr_data,
    // weight stream
    input  wire                          s_valid,
    output wire                          s_ready,
    input  wire [WB-1:0]                 s_data,
    // results
    output wire [R-1:0]                  o_valid,
    output wire [$clog2(T*TILES_MAX+1)-1:0] o_token,
    output wire [R*12-1:0]               o_row,
    output wire [R*OUT_W-1:0]            o_code,
    output wire                          o_pair,     // the odd lanes' codes are token o_token + 1's
    output reg                           busy,
    output wire                          sm_busy,    // a softmax runs (in the background)
    output reg                           overrun
);
    localparam TOKW = $clog2(T * TILES_MAX + 1);
    localparam TTW = $clog2(TILES_MAX + 1);
    localparam CHW = $clog2(CH_MAX);
    localparam WCW = $clog2(WCH_MAX);
    localparam ACC_W = 22, SW_W = 16, CA_W = 18;

    wire drain_busy, drain_left_one;
    // a step other than Q K^T waits while a softmax runs; `go` starts its units
    reg pend;
    wire hold = sm_busy && mode != 3'd4;
    wire go = (start || pend) && !hold;
    always @(posedge clk) pend <= !rst && (start || pend) && hold;
    reg pipe_busy;
    reg w2_en;
    // ---- buffers ----
    wire [15:0] w_loaded;
    reg rd_half;
    reg [CHW-1:0] rd_chunk;               // the activation memory's chunk (a_base + c)
    reg [$clog2(WCH_MAX)-1:0] rd_wchunk;  // the weight buffer's chunk (c)
    wire [R*KP*4-1:0] rd_w;
    wire [T*KP*6-1:0] rd_a;
    reg rel_en, rel_half;
    reg lane_half;
    wire [R*96-1:0] slots;
    // the stream's head: a GELU layer's table, TB beats, unpacked one entry a cycle
    localparam TB = 1024 * 8 / WB;
    localparam EPB = WB / 8;  // entries a beat
    reg [$clog2(TB+1)-1:0] tbl_beats;  // table beats still to come
    reg [$clog2(EPB+1)-1:0] tbl_left;  // entries of the held beat still to write
    reg [WB-1:0] tbl_beat;
    reg [9:0] tbl_idx;
    wire tbl_phase = tbl_beats != 0 || tbl_left != 0;
    wire w_ready;
    wire att = mode == 3'd4 || mode == 3'd5;
    wire pair = mode == 3'd4;  // Q K^T: two tokens a cycle out of the drain (T is even)
    assign o_pair = pair;
    localparam TS = T / 2;  // the drain's emissions of a pair tile
    wire ld_valid;
    wire [WB-1:0] ld_data;
    wire waiting = (start || pend) && !go;
    assign s_ready = att || waiting ? 1'b0 : tbl_phase ? (tbl_beats != 0 && tbl_left == 0 && !go) : w_ready;
    wire tbl_take = s_valid && s_ready && tbl_phase;
    wire tbl_we = tbl_left != 0;
    wire [5:0] tbl_wdata = tbl_beat[((EPB - tbl_left) % EPB) * 8 +: 6];
    always @(posedge clk) begin
        if (rst) begin tbl_beats <= 0; tbl_left <= 0; end
        else if (go) begin tbl_beats <= (mode == 3'd2) ? ($clog2(TB+1))'(TB) : 0; tbl_left <= 0; tbl_idx <= 0; end
        else begin
            if (tbl_take) begin tbl_beat <= s_data; tbl_left <= ($clog2(EPB+1))'(EPB); tbl_beats <= tbl_beats - 1'b1; end
            else if (tbl_we) begin tbl_left <= tbl_left - 1'b1; tbl_idx <= tbl_idx + 1'b1; end
        end
    end
    qv_weight_buf #(.R(R), .KP(KP), .CH_MAX(WCH_MAX), .WB(WB)) wbuf (
        .clk(clk), .rst(rst), .start(go), .n_ch(n_ch), .s_valid(att ? ld_valid : s_valid && !tbl_phase),
        .s_ready(w_ready), .s_data(att ? ld_data : s_data),
        .loaded(w_loaded), .rd_half(rd_half), .rd_chunk(rd_wchunk), .rd_w(rd_w),
        .release_en(ln_mode ? ln_rel_en : rel_en), .release_half(ln_mode ? ln_rel_half : rel_half),
        .c_half(lane_half), .c_slots(slots)
    );
    reg [TTW-1:0] rd_tile;
    // the LayerNorm step
    wire ln_mode = mode == 3'd3;
    wire sm_mode = mode == 3'd6;
    wire sm_wr;
    wire [$clog2(T*TILES_MAX)-1:0] sm_wr_token, sm_rd_token;
    wire [CHW-1:0] sm_wr_chunk;
    wire [$clog2(W+1)-1:0] sm_wr_words;
    wire [W*KP*6-1:0] sm_wr_data;
    wire [$clog2(SCH_MAX)-1:0] sm_rd_chunk;
    wire ln_rel_en, ln_rel_half, ln_valid, ln_half, ln_busy;
    wire [TOKW-1:0] ln_token;
    wire [R*ACC_W-1:0] ln_vals;
    wire [$clog2(T*TILES_MAX)-1:0] ln_rd_token;
    wire [$clog2(RCH_MAX)-1:0] ln_rd_chunk;
    wire [W*KP*RES_W-1:0] res_q;
    qv_ln_path #(.R(R), .KP(KP), .W(W), .TOK_MAX(T*TILES_MAX), .RCH_MAX(RCH_MAX), .RES_W(RES_W), .Z_W(ACC_W)) ln (
        .clk(clk), .rst(rst), .start(go && ln_mode), .n_tok(n_tok), .e_len(e_len), .eps(eps), .r_base(r_base),
        .rd_token(ln_rd_token), .rd_chunk(ln_rd_chunk), .rd_data(res_q), .w_loaded(w_loaded),
        .rel_en(ln_rel_en), .rel_half(ln_rel_half), .z_valid(ln_valid), .z_token(ln_token), .z_half(ln_half),
        .z_vals(ln_vals), .busy(ln_busy)
    );

    // the activation memory: the layer's input and its output, at their chunk bases
    wire [T*KP*6-1:0] mem_q;
    wire wb_en;
    wire [TOKW-1:0] wb_token;
    wire [CHW-1:0] wb_chunk;
    wire [$clog2(W+1)-1:0] wb_words;
    wire [W*KP*6-1:0] wb_data;
    qv_act_mem #(.T(T), .KP(KP), .W(W), .TILES_MAX(TILES_MAX), .CH_MAX(CH_MAX)) amem (
        .clk(clk), .wr_en(a_wr_en || wb_en),
        .wr_token(a_wr_en ? a_wr_token : wb_token[$clog2(T*TILES_MAX)-1:0]),
        .wr_chunk(a_wr_en ? a_wr_chunk : wb_chunk),
        .wr_words(a_wr_en ? ($clog2(W+1))'(1) : wb_words),
        .wr_data(a_wr_en ? (W*KP*6)'(a_wr_data) : wb_data),
        .rd_tile(busy ? rd_tile[$clog2(TILES_MAX)-1:0] : dbg_tile),
        .rd_chunk(busy ? rd_chunk : dbg_chunk),
        .rd_data(mem_q)
    );
    assign rd_a = mem_q;
    assign dbg_data = mem_q;

    // ---- sequencer: row tile rt, token tile tt, chunk c ----
    reg running;
    reg [15:0] rt;
    reg [TTW-1:0] tt;
    reg [WCW:0] c;
    reg [$clog2(T+1):0] gap;          // idle cycles still owed after a short tile
    reg issue_a, first_a, last_a;     // the read issued at the last edge (addresses registered)
    reg issue_b, first_b, last_b;     // ... and its data out of the buffers: the array's input
    wire half = rt[0];
    wire can_issue = running && gap == 0 && w_loaded > rt;  // the row tile itself is in (not the one before last)
    wire tile_last = can_issue && (c == n_ch - 1'b1);
    // tiles in flight (issued, not yet in the drain): their row tile's half, token tile, and
    // whether they are the row tile's last
    reg [TTW+1:0] tag_q [0:7];
    reg [2:0] tag_wr, tag_rd;
    always @(posedge clk) begin
        issue_a <= can_issue; first_a <= can_issue && c == 0; last_a <= tile_last;
        issue_b <= issue_a; first_b <= first_a; last_b <= last_a;
        if (rst) begin
            running <= 1'b0; busy <= 1'b0; rt <= 0; tt <= 0; c <= 0; gap <= 0; tag_wr <= 0;
        end else if (start || go) begin
            busy <= 1'b1;
            if (go) begin running <= !ln_mode && !sm_mode; rt <= 0; tt <= 0; c <= 0; gap <= 0; end
        end else begin
            if (gap != 0) gap <= gap - 1'b1;
            if (can_issue) begin
                rd_half <= half; rd_chunk <= a_base + CHW'(c); rd_wchunk <= c[$clog2(WCH_MAX)-1:0]; rd_tile <= tt;
                if (tile_last) begin
                    tag_q[tag_wr] <= {half, tt == n_tt - 1'b1, tt};
                    tag_wr <= tag_wr + 1'b1;
                    c <= 0;
                    gap <= (n_ch < (pair ? TS : T)) ? ($clog2(T+1)+1)'((pair ? TS : T) - n_ch) : 0;
                    if (tt == n_tt - 1'b1) begin
                        tt <= 0;
                        rt <= rt + 1'b1;
                        if (rt == n_rt - 1'b1) running <= 1'b0;
                    end else tt <= tt + 1'b1;
                end else c <= c + 1'b1;
            end
            if (!running && !pend && tag_wr == tag_rd && !drain_busy && !pipe_busy && !ln_busy) busy <= 1'b0;
        end
    end

    // ---- the array and the drain ----
    wire arr_valid;
    wire [R*T*ACC_W-1:0] arr_acc;
    wire [R*SW_W-1:0] arr_sw;
    wire [T*CA_W-1:0] arr_ca;
    qv_dot_array #(.R(R), .T(T), .KP(KP), .ACC_W(ACC_W), .SW_W(SW_W), .CA_W(CA_W)) array (
        .clk(clk), .in_valid(issue_b), .in_first(first_b), .in_last(last_b), .w(rd_w), .a(rd_a),
        .out_valid(arr_valid), .out_acc(arr_acc), .out_sw(arr_sw), .out_ca(arr_ca)
    );
    wire d_valid, d_overrun;
    wire [$clog2(T+1)-1:0] d_token;
    wire [R*ACC_W-1:0] d_acc;
    wire [R*SW_W-1:0] d_sw;
    wire [CA_W-1:0] d_ca, d_ca_b;
    wire [R*ACC_W-1:0] d_acc_b;
    qv_drain #(.R(R), .T(T), .ACC_W(ACC_W), .SW_W(SW_W), .CA_W(CA_W)) drain (
        .clk(clk), .rst(rst), .clear(go), .load(arr_valid), .pair(pair), .in_acc(arr_acc), .in_sw(arr_sw), .in_ca(arr_ca),
        .out_valid(d_valid), .out_token(d_token), .out_acc(d_acc), .out_sw(d_sw), .out_ca(d_ca),
        .out_acc_b(d_acc_b), .out_ca_b(d_ca_b), .busy(drain_busy), .overrun(d_overrun)
    );
    // the tag of the tile in the drain, and of the token it emits (registered with the emission)
    reg [TTW+1:0] cur_tag, emit_tag;
    always @(posedge clk) begin
        if (rst) tag_rd <= 0;
        else if (arr_valid) begin cur_tag <= tag_q[tag_rd]; tag_rd <= tag_rd + 1'b1; end
        if (drain_busy) emit_tag <= cur_tag;
        overrun <= !rst && !go && (overrun | d_overrun);  // per run
        // free the row tile's half when its last tile's last token leaves the drain
        rel_en <= drain_busy && cur_tag[TTW] && drain_left_one;
        rel_half <= cur_tag[TTW+1];
    end
    // the drain emits its last token when busy and the next cycle is not: track it here
    reg [$clog2(T+1)-1:0] emitted;
    always @(posedge clk)
        if (rst || arr_valid) emitted <= 0;
        else if (drain_busy) emitted <= emitted + 1'b1;
    assign drain_left_one = drain_busy && emitted == ($clog2(T+1))'((pair ? TS : T) - 1);

    // ---- output lanes ----
    // the lanes' input: the drain's token (GEMM) or the LayerNorm path's (mode 3)
    wire l_valid = ln_mode ? ln_valid : d_valid;
    wire [TOKW-1:0] tok = ln_mode ? ln_token : TOKW'(emit_tag[TTW-1:0] * T + d_token);
    wire [R*ACC_W-1:0] l_acc = ln_mode ? ln_vals : d_acc;
    always @(*) lane_half = ln_mode ? ln_half : emit_tag[TTW+1];
    localparam LAT = 7;
    reg [TOKW-1:0] tok_d [0:LAT-1];
    reg pipe_v [0:LAT-1];
    integer i;
    always @(posedge clk) begin
        tok_d[0] <= tok; pipe_v[0] <= l_valid;
        for (i = 1; i < LAT; i = i + 1) begin tok_d[i] <= tok_d[i-1]; pipe_v[i] <= pipe_v[i-1]; end
    end
    always @(*) begin
        pipe_busy = l_valid | w2_en;
        for (i = 0; i < LAT; i = i + 1) pipe_busy = pipe_busy | pipe_v[i];
    end
    assign o_token = tok_d[LAT-1];
    genvar j;
    generate
        for (j = 0; j < R; j = j + 1) begin : lane
            wire [95:0] sl = slots[j*96 +: 96];
            wire [ACC_W-1:0] s_lo = (j + 1 < R) ? d_acc[((j+1) % R)*ACC_W +: ACC_W] : {ACC_W{1'b0}};
            wire [SW_W-1:0] sw_lo = (j + 1 < R) ? d_sw[((j+1) % R)*SW_W +: SW_W] : {SW_W{1'b0}};
            // an odd lane in a pair cycle: token tok + 1's row of slots j - 1 (high) and j (low)
            localparam JP = (j + R - 1) % R;
            wire odd_pair = pair && j % 2 == 1;
            wire [TOKW-1:0] tok_j = odd_pair ? tok + 1'b1 : tok;
            wire en_j = odd_pair ? slots[JP*96 + 73] : sl[73];
            wire v = l_valid && en_j && tok_j < n_tok && tok_j >= TOKW'(skip_first);
            reg [11:0] row_d [0:LAT-1];
            reg [5:0] pos_d [0:LAT-1];
            integer q;
            always @(posedge clk) begin
                row_d[0] <= sl[85:74];
                pos_d[0] <= sl[91:86];
                for (q = 1; q < LAT; q = q + 1) begin row_d[q] <= row_d[q-1]; pos_d[q] <= pos_d[q-1]; end
            end
            assign o_pos[j*6 +: 6] = pos_d[LAT-1];
            qv_outstage #(.ACC_W(ACC_W), .SW_W(SW_W), .CA_W(CA_W), .OUT_W(OUT_W), .RESIDUAL(0), .HELD_RANGE(1)) os (
                .clk(clk), .in_valid(v),
                .s_hi(odd_pair ? d_acc_b[JP*ACC_W +: ACC_W] : l_acc[j*ACC_W +: ACC_W]),
                .s_lo(odd_pair ? d_acc_b[j*ACC_W +: ACC_W] : s_lo),
                .sw_hi(odd_pair ? d_sw[JP*SW_W +: SW_W] : d_sw[j*SW_W +: SW_W]),
                .sw_lo(odd_pair ? d_sw[j*SW_W +: SW_W] : sw_lo), .ca(odd_pair ? d_ca_b : d_ca),
                .is8(odd_pair ? slots[JP*96 + 72] : sl[72]), .a_signed(a_signed),
                .k(k), .mult(sl[17:0]), .offset(sl[65:18]), .shift(sl[71:66]), .mode(1'b0), .bypass(ln_mode),
                .res({OUT_W{1'b0}}), .lo(lo), .hi(hi), .out_valid(o_valid[j]), .code(o_code[j*OUT_W +: OUT_W])
            );
            assign o_row[j*12 +: 12] = row_d[LAT-1];
        end
    endgenerate

    // ---- write-back ----
    // W1 (the lanes' outputs): the token's values compacted to their output positions; the residual
    // memory and the GELU tables are read at those positions.  W2: registered.  W3: the codes (or
    // the new residual codes) are written.
    localparam VW = OUT_W;
    wire [R*6-1:0] o_pos;
    reg [11:0] first_d [0:LAT-1];     // the tile's first output row (slot 0's row)
    reg [3:0] words_d [0:LAT-1];
    always @(posedge clk) begin
        first_d[0] <= slots[74 +: 12];
        words_d[0] <= slots[92 +: 4];
        for (i = 1; i < LAT; i = i + 1) begin first_d[i] <= first_d[i-1]; words_d[i] <= words_d[i-1]; end
    end
    reg [R*VW-1:0] packed_vals, pair_vals_b;
    reg [R-1:0] packed_ok, pair_ok_b;  // the positions that hold a value
    integer p;
    always @(*) begin
        packed_vals = {R*VW{1'b0}};
        packed_ok = {R{1'b0}};
        pair_vals_b = {R*VW{1'b0}};
        pair_ok_b = {R{1'b0}};
        if (pair)  // row i of the tile is lane 2i's (token 2m) and lane 2i + 1's (token 2m + 1)
            for (p = 0; p < R / 2; p = p + 1) begin
                packed_vals[p*VW +: VW] = o_code[(2*p)*OUT_W +: OUT_W];
                packed_ok[p] = o_valid[2*p];
                pair_vals_b[p*VW +: VW] = o_code[(2*p+1)*OUT_W +: OUT_W];
                pair_ok_b[p] = o_valid[2*p+1];
            end
        else begin
            packed_vals = cx_v[SB*R*VW +: R*VW];
            packed_ok = cx_k[SB*R +: R];
        end
    end
    // The compaction: lane l's value goes to its output position pos_l = l - d_l (d_l: the slots
    // before l that give no output, which never decrease with l).  log2(R) stages; stage b moves a
    // value down by 2**b when bit b of its d is set.  Processing the bits from the lowest, no two
    // values ever meet (an order-preserving compaction), so each stage is a 2:1 choice per
    // position: R log2(R) multiplexers in place of an R x R crossbar.
    localparam SB = $clog2(R);
    wire [(SB+1)*R*VW-1:0] cx_v;
    wire [(SB+1)*R*SB-1:0] cx_d;
    wire [(SB+1)*R-1:0] cx_k;
    genvar cb, ci;
    generate
        for (ci = 0; ci < R; ci = ci + 1) begin : cx_in
            assign cx_v[ci*VW +: VW] = o_code[ci*OUT_W +: OUT_W];
            assign cx_d[ci*SB +: SB] = SB'(ci - o_pos[ci*6 +: 6]);
            assign cx_k[ci] = o_valid[ci];
        end
        for (cb = 0; cb < SB; cb = cb + 1) begin : cx_stage
            for (ci = 0; ci < R; ci = ci + 1) begin : node
                localparam UP = (ci + (1 << cb)) % R;  // (wraps only where ci + 2**cb >= R: unused)
                wire up_ok = ci + (1 << cb) < R;
                wire from_up = up_ok && cx_k[cb*R + UP] && cx_d[(cb*R + UP)*SB + cb];
                wire stay = cx_k[cb*R + ci] && !cx_d[(cb*R + ci)*SB + cb];
                assign cx_v[((cb+1)*R + ci)*VW +: VW] = from_up ? cx_v[(cb*R + UP)*VW +: VW]
                                                      : stay ? cx_v[(cb*R + ci)*VW +: VW] : {VW{1'b0}};
                assign cx_d[((cb+1)*R + ci)*SB +: SB] = from_up ? cx_d[(cb*R + UP)*SB +: SB] : cx_d[(cb*R + ci)*SB +: SB];
                assign cx_k[(cb+1)*R + ci] = from_up || stay;
            end
        end
    endgenerate
    wire w1_en = |o_valid;
    wire [11:0] w1_first = first_d[LAT-1];
    // W2
    reg [TOKW-1:0] w2_token;
    reg [11:0] w2_first;
    reg [3:0] w2_words;
    reg [R*VW-1:0] w2_vals, w2_vals_b;
    reg [R-1:0] w2_ok, w2_ok_b;
    always @(posedge clk) begin
        w2_en <= !rst && w1_en;
        w2_token <= o_token; w2_first <= w1_first; w2_words <= words_d[LAT-1]; w2_vals <= packed_vals;
        w2_ok <= packed_ok;
        w2_vals_b <= pair_vals_b; w2_ok_b <= pair_ok_b;
    end
    // the GELU tables (one per output position), read at W1's indices
    wire [R*6-1:0] gelu_q;
    genvar g;
    generate
        for (g = 0; g < R; g = g + 1) begin : gelu
            reg [5:0] tbl [0:1023];
            reg [5:0] q;
            always @(posedge clk) begin
                if (tbl_we) tbl[tbl_idx] <= tbl_wdata;
                q <= tbl[packed_vals[g*VW +: 10]];
            end
            assign gelu_q[g*6 +: 6] = q;
        end
    endgenerate
    // the residual memory: read at W1 (or by the idle port), written at W3 (or by the idle port)
    reg [R*RES_W-1:0] res_new;
    always @(*) begin
        for (p = 0; p < R; p = p + 1) begin : radd
            reg signed [RES_W:0] t;
            t = (RES_W+1)'($signed(res_q[p*RES_W +: RES_W])) + (RES_W+1)'($signed(w2_vals[p*VW +: VW]));
            if (t < (RES_W+1)'(lo)) t = (RES_W+1)'(lo);
            if (t > (RES_W+1)'(hi)) t = (RES_W+1)'(hi);
            res_new[p*RES_W +: RES_W] = t[RES_W-1:0];
        end
    end
    wire res_wb = w2_en && mode == 3'd1;
    qv_res_mem #(.KP(KP), .W(W), .TOK_MAX(T*TILES_MAX), .RCH_MAX(RCH_MAX), .EW(RES_W)) rmem (
        .clk(clk),
        .wr_en(res_wb || r_wr_en),
        .wr_token(r_wr_en ? r_token : w2_token[$clog2(T*TILES_MAX)-1:0]),
        .wr_chunk(r_wr_en ? r_chunk : r_base + ($clog2(RCH_MAX))'(w2_first / KP)),
        .wr_words(r_wr_en ? ($clog2(W+1))'(1) : ($clog2(W+1))'(w2_words)),
        .wr_data(r_wr_en ? (W*KP*RES_W)'(r_wr_data) : (W*KP*RES_W)'(res_new)),
        .rd_token(!busy ? r_token : ln_mode ? ln_rd_token : o_token[$clog2(T*TILES_MAX)-1:0]),
        .rd_chunk(!busy ? r_chunk : ln_mode ? ln_rd_chunk : r_base + ($clog2(RCH_MAX))'(w1_first / KP)),
        .rd_data(res_q)
    );
    assign r_rd_data = res_q[KP*RES_W-1:0];
    // W3: the codes into the activation memory (modes 0 and 2)
    reg [R*6-1:0] codes_out;
    always @(*)
        for (p = 0; p < R; p = p + 1)
            codes_out[p*6 +: 6] = (mode == 3'd2 ? gelu_q[p*6 +: 6] : w2_vals[p*VW +: 6]) ^ {o_signed, 5'b0};
    // (the softmax step writes P instead)
    assign wb_en = sm_wr || (w2_en && mode != 3'd1 && mode != 3'd4);
    assign wb_token = sm_wr ? TOKW'(sm_wr_token) : w2_token;
    assign wb_chunk = sm_wr ? sm_wr_chunk : o_base + CHW'(w2_first / KP);
    assign wb_words = sm_wr ? sm_wr_words : ($clog2(W+1))'(w2_words);
    assign wb_data = sm_wr ? sm_wr_data : (W*KP*6)'(codes_out);

    // ---- attention ----
    // the stationary operand of modes 4 and 5, made on chip
    localparam H = R / 2;
    localparam KT0 = (T * TILES_MAX + H - 1) / H, KT_MAX = KT0 < 2 ? 2 : KT0;  // the K memory's tiles of R/2 keys
    // qv_vt_mem's key chunks, a power of two (its addresses then need no multiplier)
    localparam VC0 = (T * TILES_MAX + KP - 1) / KP, VT_NCH = VC0 < 2 ? 2 : (1 << $clog2(VC0));
    wire [15:0] ld_rt;
    wire [12:0] ld_chunk;
    wire [H*KP*6-1:0] k_block, vt_block;
    qv_kv_loader #(.R(R), .KP(KP), .WB(WB)) loader (
        .clk(clk), .rst(rst), .start(go), .en(att), .n_rt(n_rt), .n_ch(13'(n_ch)), .n_rows(n_rows),
        .row_base(row_base), .mult(at_mult), .offset(at_offset), .shift(at_shift),
        .s_valid(ld_valid), .s_ready(att && w_ready), .s_data(ld_data),
        .rd_rt(ld_rt), .rd_chunk(ld_chunk), .rd_block(mode == 3'd4 ? k_block : vt_block)
    );
    // the K memory: K rows by tiles of R/2 keys (one read: a row tile's keys at one chunk)
    wire k_wr = wb_en && kv_en && wb_chunk >= k_lo && wb_chunk < k_lo + CHW'(kv_ch);
    wire v_wr = wb_en && kv_en && wb_chunk >= v_lo && wb_chunk < v_lo + CHW'(kv_ch);
    qv_act_mem #(.T(H), .KP(KP), .W(W), .TILES_MAX(KT_MAX), .CH_MAX(RCH_MAX)) kmem (
        .clk(clk), .wr_en(k_wr), .wr_token(($clog2(H*KT_MAX))'(w2_token)),
        .wr_chunk(($clog2(RCH_MAX))'(wb_chunk - k_lo)), .wr_words(wb_words), .wr_data(wb_data),
        .rd_tile(($clog2(KT_MAX))'(ld_rt)), .rd_chunk(($clog2(RCH_MAX))'(src + 12'(ld_chunk))), .rd_data(k_block)
    );
    // V^T: the V third's codes of a token go to their dims' banks
    qv_vt_mem #(.R(R), .KP(KP), .D_MAX(KP * RCH_MAX), .TOK_MAX(T * TILES_MAX), .NCH(VT_NCH)) vtmem (
        .clk(clk), .wr_en(v_wr), .wr_token(($clog2(T*TILES_MAX))'(w2_token)),
        .wr_d0(($clog2(KP*RCH_MAX))'(12'(wb_chunk - v_lo) * KP)), .wr_n(($clog2(R+1))'(32'(wb_words) * KP)),
        .wr_data(codes_out),
        .rd_d0(($clog2(KP*RCH_MAX))'(src + 12'(ld_rt) * H)),
        .rd_chunk(($clog2(VT_NCH))'(ld_chunk)), .rd_data(vt_block)
    );
    // the score memory: a head's Q K^T, token (query) by key chunk, written by the lanes (mode 4); a
    // bank for the even tokens and one for the odd, so that a pair cycle writes both its tokens
    wire sc_wb = w2_en && mode == 3'd4;
    wire [KP*RES_W*W-1:0] sc_q, sc_q_even, sc_q_odd;
    wire [W*KP*RES_W-1:0] sc_vals, sc_vals_b;
    genvar sv;
    generate
        for (sv = 0; sv < W*KP; sv = sv + 1) begin : score
            assign sc_vals[sv*RES_W +: RES_W] = w2_vals[sv*VW +: RES_W];
            assign sc_vals_b[sv*RES_W +: RES_W] = w2_vals_b[sv*VW +: RES_W];
        end
    endgenerate
    localparam STOK = (T * TILES_MAX + 1) / 2 < 2 ? 2 : (T * TILES_MAX + 1) / 2;  // a parity's tokens
    localparam STW = $clog2(STOK);
    wire sm_bank;  // the bank the running softmax reads
    wire [$clog2(T*TILES_MAX)-1:0] sc_tok = sc_wr_en ? r_token : w2_token[$clog2(T*TILES_MAX)-1:0];
    wire [$clog2(T*TILES_MAX)-1:0] sc_rd_tok = sm_busy ? sm_rd_token : r_token;
    // a parity memory's row: the token's pair, then the bank (2 x STOK rows, none unused)
    wire [STW:0] sc_wa = {STW'(sc_tok >> 1), sc_bank}, sc_ra = {STW'(sc_rd_tok >> 1), sm_busy ? sm_bank : sc_bank};
    wire [$clog2(SCH_MAX)-1:0] sc_wchunk = sc_wr_en ? sc_chunk : ($clog2(SCH_MAX))'(w2_first / KP);
    wire [$clog2(W+1)-1:0] sc_words = sc_wr_en ? ($clog2(W+1))'(1) : ($clog2(W+1))'(w2_words);
    wire [W*KP*RES_W-1:0] sc_in = sc_wr_en ? (W*KP*RES_W)'(sc_wr_data) : sc_vals;
    reg sc_rd_odd;
    always @(posedge clk) sc_rd_odd <= sc_rd_tok[0];
    qv_res_mem #(.KP(KP), .W(W), .TOK_MAX(2*STOK), .RCH_MAX(SCH_MAX), .EW(RES_W)) smem_even (
        .clk(clk), .wr_en((sc_wr_en || (sc_wb && !pair)) ? !sc_tok[0] : sc_wb),
        .wr_token(sc_wa), .wr_chunk(sc_wchunk), .wr_words(sc_words), .wr_data(sc_in),
        .rd_token(sc_ra), .rd_chunk(sm_busy ? sm_rd_chunk : sc_chunk), .rd_data(sc_q_even)
    );
    qv_res_mem #(.KP(KP), .W(W), .TOK_MAX(2*STOK), .RCH_MAX(SCH_MAX), .EW(RES_W)) smem_odd (
        .clk(clk), .wr_en((sc_wr_en || (sc_wb && !pair)) ? sc_tok[0] : sc_wb && w2_ok_b[0]),
        .wr_token(sc_wa), .wr_chunk(sc_wchunk), .wr_words(sc_words), .wr_data(pair ? sc_vals_b : sc_in),
        .rd_token(sc_ra), .rd_chunk(sm_busy ? sm_rd_chunk : sc_chunk), .rd_data(sc_q_odd)
    );
    assign sc_q = sc_rd_odd ? sc_q_odd : sc_q_even;
    // Q K^T also gives the softmax its row maxima: each token's run of scores, as it is written, updates
    // the token's maximum (the first key tile sets it); a pair cycle updates two tokens
    // (comparison trees over the lanes; position 0 always holds a score)
    wire signed [RES_W-1:0] run_max, run_max_b;
    qv_run_max #(.R(R), .AW(RES_W), .STRIDE(VW)) qk_max (.vals(w2_vals), .ok(w2_ok), .max(run_max));
    qv_run_max #(.R(R), .AW(RES_W), .STRIDE(VW)) qk_max_b (.vals(w2_vals_b), .ok(w2_ok_b), .max(run_max_b));
    // the softmax step (mode 6): the score memory's rows -> P codes into the activation memory from
    // o_base (M, S and Qa as at_mult, at_shift and at_offset)
    qv_sm_path #(.R(R), .KP(KP), .W(W), .TOK_MAX(T*TILES_MAX), .SCH_MAX(SCH_MAX), .CH_MAX(CH_MAX), .A_W(RES_W), .QA_W(QA_W)) sm (
        .clk(clk), .rst(rst), .start(go && sm_mode), .n_tok(n_tok), .mult(at_mult), .shift(at_shift),
        .recip(at_offset[QA_W-1:0]), .hi(hi[5:0]), .p_base(o_base), .bank(sc_bank),
        .rd_token(sm_rd_token), .rd_chunk(sm_rd_chunk), .rd_bank(sm_bank), .rd_data(sc_q),
        .wr_en(sm_wr), .wr_token(sm_wr_token), .wr_chunk(sm_wr_chunk), .wr_words(sm_wr_words), .wr_data(sm_wr_data),
        .busy(sm_busy), .dbg_token(r_token), .dbg_inv(sm_inv), .max_known(at_offset[47]),
        .mx_en(sc_wb), .mx_bank(sc_bank), .mx_token(w2_token[$clog2(T*TILES_MAX)-1:0]), .mx_first(w2_first == 0), .mx_run(run_max),
        .mx_en_b(sc_wb && w2_ok_b[0]), .mx_run_b(run_max_b)
    );
    assign sc_rd_data = sc_q[KP*RES_W-1:0];
endmodule
