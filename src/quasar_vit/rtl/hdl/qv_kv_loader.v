// qv_kv_loader: the stationary operand of an attention matmul, made on chip as a weight stream.
//
// Q K^T (qv_gemm_core mode 4) takes a head's K rows from the K memory; P V (mode 5) its V^T rows
// (dims) from qv_vt_mem.  Either way a row tile is R/2 rows of 6-bit signed codes, each row an
// "8-bit" row of two slots: its high nibble a >> 4 (offset: (a' >> 4) + 6, with a' = a + 32 as the
// memories hold it) and its unsigned low nibble a & 15 = a' & 15 (16 * high + low = a).  The
// stream has the format qv_weight_buf takes from DDR (rtl/layout.py): per row tile R slot
// constants, then n_ch chunks of R x KP nibbles.  The constants are the layer's one requantiser
// (mult, offset, shift), out_en for high slots of rows < n_rows, out_row = row_base + row,
// out_pos = the row in the tile, and the tile's words.  One beat a cycle while the buffer takes
// them: the memory is addressed with the chunk of the next beat, so its data (read latency 1) is
// there when that beat is offered.
//   K rows (mode 4):  row tile rt = keys rt*R/2 .., chunk c = the K memory's tile rt, chunk src + c
//   V^T rows (mode 5): row tile rt = dims src + rt*R/2 .., chunk c = keys c*KP ..
module qv_kv_loader #(
    parameter R = 4,
    parameter KP = 4,
    parameter WB = 32
) (
    input  wire                   clk,
    input  wire                   rst,
    input  wire                   start,
    input  wire                   en,          // this layer is an attention matmul
    input  wire [15:0]            n_rt,
    input  wire [12:0]            n_ch,
    input  wire [11:0]            n_rows,
    input  wire [11:0]            row_base,
    input  wire signed [17:0]     mult,
    input  wire signed [47:0]     offset,
    input  wire [5:0]             shift,
    // the stream
    output wire                   s_valid,
    input  wire                   s_ready,
    output wire [WB-1:0]          s_data,
    // the memory: the row tile and chunk of the beat after this edge, and the block read (R/2 x KP)
    output wire [15:0]            rd_rt,
    output wire [12:0]            rd_chunk,
    input  wire [R/2*KP*6-1:0]    rd_block
);
    localparam H = R / 2;
    localparam CW = R * KP * 4;
    localparam BPC = CW / WB;
    localparam CB = (96 + WB - 1) / WB;
    reg active, in_const;
    reg [15:0] rt;
    reg [$clog2(R+1)-1:0] s;
    reg [$clog2(CB+1)-1:0] cb;
    reg [12:0] c;
    reg [$clog2(BPC+1)-1:0] b;
    assign s_valid = active;
    wire take = active && s_ready;
    wire last_const = s == R - 1 && cb == CB - 1;
    wire last_beat = b == BPC - 1;
    wire last_chunk = c == n_ch - 1'b1;
    // the next state's row tile and chunk (what the memory must hold after this edge)
    wire to_next_tile = take && ((in_const && last_const && n_ch == 0) || (!in_const && last_beat && last_chunk));
    wire to_next_chunk = take && !in_const && last_beat && !last_chunk;
    assign rd_rt = to_next_tile ? rt + 1'b1 : rt;
    assign rd_chunk = to_next_tile ? 13'd0 : to_next_chunk ? c + 1'b1 : c;
    always @(posedge clk) begin
        if (rst) active <= 1'b0;
        else if (start) begin
            active <= en && n_rt != 0; in_const <= 1'b1; rt <= 0; s <= 0; cb <= 0; c <= 0; b <= 0;
        end else if (take) begin
            if (in_const) begin
                if (cb == CB - 1) begin cb <= 0; s <= s + 1'b1; end else cb <= cb + 1'b1;
                if (last_const) begin
                    s <= 0;
                    if (n_ch != 0) in_const <= 1'b0;
                    else begin rt <= rt + 1'b1; if (rt == n_rt - 1'b1) active <= 1'b0; end
                end
            end else begin
                b <= last_beat ? 0 : b + 1'b1;
                if (last_beat) begin
                    c <= last_chunk ? 13'd0 : c + 1'b1;
                    if (last_chunk) begin
                        in_const <= 1'b1; rt <= rt + 1'b1;
                        if (rt == n_rt - 1'b1) active <= 1'b0;
                    end
                end
            end
        end
    end
    // slot s's constant
    wire [$clog2(H)-1:0] m = ($clog2(H))'(s >> 1);
    wire hi = !s[0];
    wire [11:0] tile_row = 12'(rt * H);
    wire [11:0] row = tile_row + 12'(m);
    wire [11:0] rows_left = n_rows - tile_row;
    wire [11:0] tile_rows = (rows_left < 12'(H)) ? rows_left : 12'(H);
    wire [3:0] words = 4'((tile_rows + 12'(KP - 1)) / 12'(KP));
    wire [95:0] cst = {words, 6'(m), 12'(row_base + row), hi && row < n_rows, hi, shift, offset, mult};
    wire [CB*WB-1:0] cst_beats = (CB*WB)'(cst);
    // the chunk word: slot 2m = high nibbles of row m, slot 2m+1 = its low nibbles
    reg [CW-1:0] word;
    integer r, k;
    always @(*)
        for (r = 0; r < H; r = r + 1)
            for (k = 0; k < KP; k = k + 1) begin
                word[((2*r)*KP + k)*4 +: 4] = 4'(rd_block[(r*KP + k)*6 + 4 +: 2]) + 4'd6;
                word[((2*r+1)*KP + k)*4 +: 4] = rd_block[(r*KP + k)*6 +: 4];
            end
    assign s_data = in_const ? cst_beats[cb*WB +: WB] : word[b*WB +: WB];
endmodule
