// qv_weight_buf: the weights of two row tiles (ping-pong), filled from a stream of DDR beats.
//
// A row tile is R nibble-row slots.  Its stream (rtl/layout.py writes it) is R slot constants of
// ceil(96 / WB) beats each, then n_ch k-chunks of R x KP offset weights w' (4 bits each), R*KP*4/WB
// beats a chunk, each value low beat first:
//   slot constant: [17:0] mult  [65:18] offset  [71:66] shift  [72] is8 (the slot is the high
//                  nibble of an 8-bit row)  [73] out_en (the slot gives an output)  [85:74] out_row
//                  [91:86] out_pos (outputs of the tile before this slot's)  [95:92] tile_words
//                  (the tile's outputs in KP-code words; slot 0's is read)
//   chunk word:    w'[slot s][lane k] at bits (s*KP + k)*4, the beats low part first.
// While a half is free (`full` low) the buffer takes beats into it; when the row tile is complete
// the half is full and the fill moves to the other half.  A reader waits for its tile by count
// (`loaded` > the tile's index): a half that is full may still hold the tile before last.  With n_ch = 0 a row tile is its
// constants alone (a LayerNorm step: per-channel gain and offset, qv_gemm_core mode 3).  The reader (qv_gemm_core) reads chunk
// words with 1 cycle of latency and frees a half with `release` once its last outputs have left.
module qv_weight_buf #(
    parameter R = 4,
    parameter KP = 4,
    parameter CH_MAX = 8,
    parameter WB = 32          // stream beat width (bits); R*KP*4 must be a multiple of it
) (
    input  wire                        clk,
    input  wire                        rst,
    input  wire                        start,      // a layer begins: its row tile 0 goes to half 0
    input  wire [$clog2(CH_MAX+1)-1:0] n_ch,       // k-chunks of the layer
    // the stream
    input  wire                        s_valid,
    output wire                        s_ready,
    input  wire [WB-1:0]               s_data,
    // the reader
    output reg  [15:0]                 loaded,     // row tiles complete since start (tile i is in once loaded > i)
    input  wire                        rd_half,
    input  wire [$clog2(CH_MAX)-1:0]   rd_chunk,
    output reg  [R*KP*4-1:0]           rd_w,
    input  wire                        release_en,
    input  wire                        release_half,
    // slot constants of the half `c_half`
    input  wire                        c_half,
    output wire [R*96-1:0]             c_slots
);
    localparam CW = R * KP * 4;          // a chunk word
    localparam BPC = CW / WB;            // beats per chunk
    localparam BW = $clog2(BPC + 1);
    localparam CB = (96 + WB - 1) / WB;  // beats per slot constant
    localparam CBW = $clog2(CB + 1);
    reg [CBW-1:0] n_cbeat;
    reg [CB*WB-1:0] cword;
    wire [CB*WB-1:0] next_cword = (CB == 1) ? (CB*WB)'(s_data) : {s_data, cword[CB*WB-1:WB]};
    reg [1:0] full_q;
    reg fill;                            // the half being filled
    reg [$clog2(R+1)-1:0] n_const;       // constant beats taken
    reg [$clog2(CH_MAX+1)-1:0] n_chunk;  // chunks written
    reg [BW-1:0] n_beat;                 // beats of the current chunk
    reg [CW-1:0] word;
    reg [95:0] slot [0:1][0:R-1];
    reg [CW-1:0] mem [0:2*CH_MAX-1];
    assign s_ready = !rst && !start && !full_q[fill];
    wire take = s_valid && s_ready;
    wire [CW-1:0] next_word = (BPC == 1) ? CW'(s_data) : {s_data, word[CW-1:WB]};
    integer i;
    always @(posedge clk) begin
        if (rst || start) begin
            full_q <= 2'b00; fill <= 1'b0; n_const <= 0; n_chunk <= 0; n_beat <= 0; n_cbeat <= 0; loaded <= 0;
        end else begin
            if (release_en) full_q[release_half] <= 1'b0;
            if (take) begin
                if (n_const < R) begin
                    cword <= next_cword;
                    if (n_cbeat == CBW'(CB - 1)) begin
                        slot[fill][n_const] <= next_cword[95:0];
                        n_cbeat <= 0;
                        if (n_ch == 0 && n_const == R - 1) begin  // constants only (a LayerNorm's)
                            full_q[fill] <= 1'b1;
                            loaded <= loaded + 1'b1;
                            fill <= ~fill;
                            n_const <= 0;
                        end else n_const <= n_const + 1'b1;
                    end else n_cbeat <= n_cbeat + 1'b1;
                end else begin
                    word <= next_word;
                    if (n_beat == BW'(BPC - 1)) begin
                        mem[{fill, n_chunk[$clog2(CH_MAX)-1:0]}] <= next_word;
                        n_beat <= 0;
                        if (n_chunk + 1'b1 == n_ch) begin  // the row tile is in
                            full_q[fill] <= 1'b1;
                            loaded <= loaded + 1'b1;
                            fill <= ~fill;
                            n_const <= 0;
                            n_chunk <= 0;
                        end else n_chunk <= n_chunk + 1'b1;
                    end else n_beat <= n_beat + 1'b1;
                end
            end
        end
        rd_w <= mem[{rd_half, rd_chunk}];
    end
    genvar s;
    generate
        for (s = 0; s < R; s = s + 1) begin : consts
            assign c_slots[s*96 +: 96] = slot[c_half][s];
        end
    endgenerate
endmodule
