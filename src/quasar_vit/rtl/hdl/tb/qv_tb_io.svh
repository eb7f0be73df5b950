// The testbenches' files, included in each tb_*.sv: the stimulus +in=FILE (decimal integers, read one
// at a time with rd()) and the results +out=FILE (written with $fwrite(fo, ...)).
string fin, fout;
integer fi, fo, r;
function automatic longint rd();
    longint v;
    r = $fscanf(fi, "%d", v);
    return v;
endfunction
task automatic open_files();
    void'($value$plusargs("in=%s", fin));
    void'($value$plusargs("out=%s", fout));
    fi = $fopen(fin, "r");
    fo = $fopen(fout, "w");
endtask
