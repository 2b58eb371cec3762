package main

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// parsed is what the test's own GGUF reader makes of a file.
type parsed struct {
	Version       uint32
	KV            map[string]any
	Keys          []string
	Tensors       []tensorInfo
	DataStart     int64
	Size          int64
	raw           []byte
	alignmentUsed uint64
}

type tensorInfo struct {
	Name   string
	Dims   []uint64
	Type   uint32
	Offset uint64
}

// parseGGUF reads a GGUF v3 file as the format describes it, independently
// of the writer's code.
func parseGGUF(t *testing.T, b []byte) parsed {
	t.Helper()
	r := bytes.NewReader(b)
	rd := func(v any) {
		t.Helper()
		if err := binary.Read(r, binary.LittleEndian, v); err != nil {
			t.Fatalf("read at %d: %v", int(r.Size())-r.Len(), err)
		}
	}
	str := func() string {
		var n uint64
		rd(&n)
		if n > uint64(r.Len()) {
			t.Fatalf("string of %d bytes with %d left", n, r.Len())
		}
		s := make([]byte, n)
		_, _ = io.ReadFull(r, s)
		return string(s)
	}
	var scalar func(typ uint32) any
	scalar = func(typ uint32) any {
		switch typ {
		case 4:
			var v uint32
			rd(&v)
			return v
		case 5:
			var v int32
			rd(&v)
			return v
		case 6:
			var v float32
			rd(&v)
			return v
		case 7:
			var v uint8
			rd(&v)
			if v > 1 {
				t.Fatalf("bool %d", v)
			}
			return v == 1
		case 8:
			return str()
		case 9:
			var et uint32
			var n uint64
			rd(&et)
			rd(&n)
			out := make([]any, n)
			for i := range out {
				out[i] = scalar(et)
			}
			return out
		}
		t.Fatalf("unexpected value type %d", typ)
		return nil
	}

	magic := make([]byte, 4)
	_, _ = io.ReadFull(r, magic)
	if string(magic) != "GGUF" {
		t.Fatalf("magic %q", magic)
	}
	p := parsed{KV: map[string]any{}, raw: b, Size: int64(len(b))}
	var nTensors, nKV uint64
	rd(&p.Version)
	rd(&nTensors)
	rd(&nKV)
	for range nKV {
		k := str()
		var typ uint32
		rd(&typ)
		p.KV[k] = scalar(typ)
		p.Keys = append(p.Keys, k)
	}
	for range nTensors {
		ti := tensorInfo{Name: str()}
		var nd uint32
		rd(&nd)
		ti.Dims = make([]uint64, nd)
		for i := range ti.Dims {
			rd(&ti.Dims[i])
		}
		rd(&ti.Type)
		rd(&ti.Offset)
		p.Tensors = append(p.Tensors, ti)
	}
	p.alignmentUsed = 32
	if a, ok := p.KV["general.alignment"].(uint32); ok {
		p.alignmentUsed = uint64(a)
	}
	pos := uint64(len(b) - r.Len())
	p.DataStart = int64((pos + p.alignmentUsed - 1) / p.alignmentUsed * p.alignmentUsed)
	return p
}

// values reads tensor i's F32 data.
func (p parsed) values(t *testing.T, i int) []float32 {
	t.Helper()
	ti := p.Tensors[i]
	n := uint64(1)
	for _, d := range ti.Dims {
		n *= d
	}
	start := uint64(p.DataStart) + ti.Offset
	if start+4*n > uint64(p.Size) {
		t.Fatalf("tensor %s: data [%d, %d) beyond the file's %d bytes", ti.Name, start, start+4*n, p.Size)
	}
	out := make([]float32, n)
	for j := range out {
		out[j] = math.Float32frombits(binary.LittleEndian.Uint32(p.raw[start+4*uint64(j):]))
	}
	return out
}

func writeTiny(t *testing.T, args ...string) (parsed, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	var out bytes.Buffer
	if err := run(append([]string{"-out", path}, args...), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return parseGGUF(t, b), out.String()
}

func TestWrittenFileParsesBack(t *testing.T) {
	p, msg := writeTiny(t, "-embd", "64", "-layers", "2", "-ff", "96", "-heads", "4", "-kv-heads", "2", "-context", "256")
	if p.Version != 3 {
		t.Errorf("version %d, want 3", p.Version)
	}
	// The keys llama.cpp's llama loader and Ollama read.
	want := map[string]any{
		"general.architecture":                   "llama",
		"general.file_type":                      uint32(0),
		"llama.context_length":                   uint32(256),
		"llama.embedding_length":                 uint32(64),
		"llama.block_count":                      uint32(2),
		"llama.feed_forward_length":              uint32(96),
		"llama.rope.dimension_count":             uint32(16),
		"llama.attention.head_count":             uint32(4),
		"llama.attention.head_count_kv":          uint32(2),
		"llama.attention.layer_norm_rms_epsilon": float32(1e-5),
		"tokenizer.ggml.model":                   "llama",
		"tokenizer.ggml.bos_token_id":            uint32(1),
		"tokenizer.ggml.eos_token_id":            uint32(2),
		"tokenizer.ggml.add_bos_token":           true,
	}
	for k, v := range want {
		if got, ok := p.KV[k]; !ok || got != v {
			t.Errorf("%s = %v (%T), want %v (%T)", k, got, got, v, v)
		}
	}
	tokens, _ := p.KV["tokenizer.ggml.tokens"].([]any)
	scores, _ := p.KV["tokenizer.ggml.scores"].([]any)
	types, _ := p.KV["tokenizer.ggml.token_type"].([]any)
	if len(tokens) < 300 || len(scores) != len(tokens) || len(types) != len(tokens) {
		t.Fatalf("vocabulary: %d tokens, %d scores, %d types", len(tokens), len(scores), len(types))
	}
	// llama.cpp refuses a vocabulary with a piece twice.
	seen := map[any]bool{}
	for _, tok := range tokens {
		if seen[tok] {
			t.Errorf("token %q twice", tok)
		}
		seen[tok] = true
	}
	if p.KV["llama.vocab_size"] != uint32(len(tokens)) {
		t.Errorf("llama.vocab_size %v, %d tokens", p.KV["llama.vocab_size"], len(tokens))
	}
	// llama.cpp's SentencePiece vocabulary looks up the newline's byte token.
	if i := slices.Index(tokens, any("<0x0A>")); i < 0 || types[i] != tokenByte {
		t.Errorf("<0x0A> at %d (types %v)", i, types[max(i, 0)])
	}
	if tokens[2] != "</s>" || types[2] != tokenControl {
		t.Errorf("token 2 %v of type %v, want </s> control", tokens[2], types[2])
	}

	// token_embd, output_norm and output, and 9 per block.
	if len(p.Tensors) != 3+9*2 {
		t.Fatalf("%d tensors, want %d", len(p.Tensors), 3+9*2)
	}
	names := map[string]tensorInfo{}
	var end uint64
	for _, ti := range p.Tensors {
		if ti.Type != 0 {
			t.Errorf("tensor %s of type %d, want F32 (0)", ti.Name, ti.Type)
		}
		if ti.Offset%p.alignmentUsed != 0 {
			t.Errorf("tensor %s at offset %d, not aligned to %d", ti.Name, ti.Offset, p.alignmentUsed)
		}
		if ti.Offset < end {
			t.Errorf("tensor %s at offset %d overlaps the previous one (ends at %d)", ti.Name, ti.Offset, end)
		}
		n := uint64(4)
		for _, d := range ti.Dims {
			n *= d
		}
		end = ti.Offset + n
		names[ti.Name] = ti
	}
	if uint64(p.Size) < uint64(p.DataStart)+end {
		t.Errorf("file of %d bytes; data ends at %d", p.Size, uint64(p.DataStart)+end)
	}
	for name, dims := range map[string][]uint64{
		"token_embd.weight":        {64, uint64(len(tokens))},
		"blk.1.attn_k.weight":      {64, 32}, // 2 kv heads of 16
		"blk.0.ffn_down.weight":    {96, 64},
		"blk.1.ffn_gate.weight":    {64, 96},
		"output_norm.weight":       {64},
		"output.weight":            {64, uint64(len(tokens))},
		"blk.0.attn_output.weight": {64, 64},
	} {
		if got := names[name].Dims; !slices.Equal(got, dims) {
			t.Errorf("%s dims %v, want %v", name, got, dims)
		}
	}
	// The output rows of </s> are zero; a word's are not.
	out := p.values(t, slices.IndexFunc(p.Tensors, func(ti tensorInfo) bool { return ti.Name == "output.weight" }))
	row := func(id int) []float32 { return out[id*64 : (id+1)*64] }
	if slices.ContainsFunc(row(eosID), func(f float32) bool { return f != 0 }) {
		t.Error("</s> has a non-zero output row")
	}
	word := slices.Index(tokens, any("▁the"))
	if word < 0 || !slices.ContainsFunc(row(word), func(f float32) bool { return f != 0 }) {
		t.Errorf("▁the (id %d) has a zero output row", word)
	}
	norm := p.values(t, slices.IndexFunc(p.Tensors, func(ti tensorInfo) bool { return ti.Name == "output_norm.weight" }))
	if slices.ContainsFunc(norm, func(f float32) bool { return f != 1 }) {
		t.Errorf("output_norm.weight %v, want ones", norm[:4])
	}
	if !strings.Contains(msg, "21 tensors") {
		t.Errorf("summary %q", msg)
	}
}

func TestSeededFileIsTheSameEachTime(t *testing.T) {
	args := []string{"-embd", "32", "-layers", "1", "-ff", "32", "-heads", "2", "-kv-heads", "2"}
	a, _ := writeTiny(t, args...)
	b, _ := writeTiny(t, args...)
	if !bytes.Equal(a.raw, b.raw) {
		t.Error("two files of the same seed differ")
	}
	c, _ := writeTiny(t, append(args, "-seed", "2")...)
	if bytes.Equal(a.raw, c.raw) {
		t.Error("another seed wrote the same file")
	}
}

func TestBadShapesAreRefused(t *testing.T) {
	for _, args := range [][]string{
		{"-embd", "100", "-heads", "8"},
		{"-heads", "8", "-kv-heads", "3"},
		{"-embd", "24", "-heads", "8"}, // head size 3: odd
		{"-layers", "0"},
	} {
		err := run(append([]string{"-out", filepath.Join(t.TempDir(), "x.gguf")}, args...), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: no error", args)
		}
	}
}

func TestUnknownValueTypeIsRefused(t *testing.T) {
	err := gguf{KV: []kv{{"x", 1.5}}}.writeTo(io.Discard)
	if err == nil || !strings.Contains(err.Error(), "x:") {
		t.Errorf("float64 value: %v", err)
	}
	err = gguf{Tensors: []tensor{{Name: "t", Dims: []uint64{3}, Data: make([]float32, 2)}}}.writeTo(io.Discard)
	if err == nil {
		t.Error("2 values for 3 dims: no error")
	}
}
