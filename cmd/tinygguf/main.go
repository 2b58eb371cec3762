// Command tinygguf writes a small llama model with random weights as a
// GGUF v3 file, for the lab to serve with a real inference server
// (Ollama, llama.cpp) without downloading a model:
//
//	go run ./cmd/tinygguf -out .tmp/tiny.gguf
//
// The model is llama.cpp's "llama" architecture in F32 with a SentencePiece
// ("llama") vocabulary: <unk>, <s>, </s>, the 256 byte tokens, "▁", each
// lowercase letter in runs of 1 to 32 (the lab's prompt is one letter
// repeated, so it costs a few tokens), and some short words. The rows of
// the output matrix for the control and byte tokens are zero and the
// others are large, so a sampler with a top-k never picks </s> or a lone
// byte: every answer runs to its token limit, in whole words. The answers
// mean nothing; the weights are seeded, so the file is the same each time.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"strings"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "tinygguf:", err)
		os.Exit(1)
	}
}

// shape is the model's size.
type shape struct {
	Embd, Layers, FF, Heads, KVHeads, Context int
	Seed                                      uint64
}

func (s shape) check() error {
	switch {
	case s.Embd <= 0 || s.Layers <= 0 || s.FF <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.Context <= 0:
		return fmt.Errorf("every size must be > 0: %+v", s)
	case s.Embd%s.Heads != 0:
		return fmt.Errorf("-embd %d is not a multiple of -heads %d", s.Embd, s.Heads)
	case s.Heads%s.KVHeads != 0:
		return fmt.Errorf("-heads %d is not a multiple of -kv-heads %d", s.Heads, s.KVHeads)
	case (s.Embd/s.Heads)%2 != 0:
		return fmt.Errorf("the head size %d must be even (rotary embedding)", s.Embd/s.Heads)
	}
	return nil
}

func run(args []string, stdout, stderr io.Writer) error {
	var (
		s   shape
		out string
	)
	fs := flag.NewFlagSet("tinygguf", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&out, "out", "tiny.gguf", "file to write")
	fs.IntVar(&s.Embd, "embd", 256, "embedding length")
	fs.IntVar(&s.Layers, "layers", 4, "blocks")
	fs.IntVar(&s.FF, "ff", 768, "feed-forward length")
	fs.IntVar(&s.Heads, "heads", 4, "attention heads")
	fs.IntVar(&s.KVHeads, "kv-heads", 4, "key-value heads")
	fs.IntVar(&s.Context, "context", 1024, "training context length")
	fs.Uint64Var(&s.Seed, "seed", 1, "seed of the random weights")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := s.check(); err != nil {
		return err
	}
	g := model(s)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := g.writeTo(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	var params int
	for _, t := range g.Tensors {
		params += len(t.Data)
	}
	fmt.Fprintf(stdout, "tinygguf: wrote %s: llama, %d blocks, embedding %d, %d tensors, %.1fM parameters\n",
		out, s.Layers, s.Embd, len(g.Tensors), float64(params)/1e6)
	return nil
}

// Token types of a llama.cpp vocabulary.
const (
	tokenNormal  int32 = 1
	tokenUnknown int32 = 2
	tokenControl int32 = 3
	tokenByte    int32 = 6
)

// Special token ids.
const (
	unkID = 0
	bosID = 1
	eosID = 2
)

// words are the whole words of the vocabulary, each with the
// SentencePiece space mark in front.
var words = strings.Fields(`the of and to in is it you that he was for on are with as his they be at
one have this from or had by hot word but what some we can out other were all there when up use your
how said an each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most people my
over know water than call first who may down side been now find any new work part take get place made
live where after back little only round man year came show every good me give our under name very
through just form sentence great think say help low line differ turn cause much mean before move
right boy old too same tell does set three want air well also play small end put home read hand port
large spell add even land here must big high such follow act why ask men change went light kind off
need house picture try us again animal point mother world near build self earth father`)

// vocab is the tokenizer: pieces, scores and types, in id order.
type vocab struct {
	Tokens []string
	Scores []float32
	Types  []int32
}

func (v *vocab) add(piece string, score float32, typ int32) {
	v.Tokens = append(v.Tokens, piece)
	v.Scores = append(v.Scores, score)
	v.Types = append(v.Types, typ)
}

// newVocab builds the vocabulary. SentencePiece merges the adjacent pair
// whose merged piece has the highest score, so longer pieces score
// higher: a run of 256 letters ends as eight pieces of 32.
func newVocab() vocab {
	var v vocab
	v.add("<unk>", 0, tokenUnknown)
	v.add("<s>", 0, tokenControl)
	v.add("</s>", 0, tokenControl)
	for b := range 256 {
		v.add(fmt.Sprintf("<0x%02X>", b), 0, tokenByte)
	}
	v.add("▁", -1, tokenNormal)
	for c := 'a'; c <= 'z'; c++ {
		for n := 1; n <= 32; n *= 2 {
			v.add(strings.Repeat(string(c), n), float32(n)-10, tokenNormal)
		}
	}
	seen := map[string]bool{}
	for _, w := range words {
		if seen[w] {
			continue
		}
		seen[w] = true
		v.add("▁"+w, float32(len(w))-10, tokenNormal)
	}
	return v
}

// model is the whole file: metadata and random weights for s.
func model(s shape) gguf {
	v := newVocab()
	headDim := s.Embd / s.Heads
	kvDim := headDim * s.KVHeads
	g := gguf{KV: []kv{
		{"general.architecture", "llama"},
		{"general.name", "tiny-random-llama"},
		{"general.alignment", uint32(ggufAlignment)},
		{"general.file_type", uint32(0)}, // all F32
		{"llama.context_length", uint32(s.Context)},
		{"llama.embedding_length", uint32(s.Embd)},
		{"llama.block_count", uint32(s.Layers)},
		{"llama.feed_forward_length", uint32(s.FF)},
		{"llama.rope.dimension_count", uint32(headDim)},
		{"llama.rope.freq_base", float32(10000)},
		{"llama.attention.head_count", uint32(s.Heads)},
		{"llama.attention.head_count_kv", uint32(s.KVHeads)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-5)},
		{"llama.vocab_size", uint32(len(v.Tokens))},
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", v.Tokens},
		{"tokenizer.ggml.scores", v.Scores},
		{"tokenizer.ggml.token_type", v.Types},
		{"tokenizer.ggml.bos_token_id", uint32(bosID)},
		{"tokenizer.ggml.eos_token_id", uint32(eosID)},
		{"tokenizer.ggml.unknown_token_id", uint32(unkID)},
		{"tokenizer.ggml.add_bos_token", true},
		{"tokenizer.ggml.add_eos_token", false},
	}}
	rng := rand.New(rand.NewPCG(s.Seed, 0x6767756621))
	// random is a tensor of normal values with standard deviation sd.
	random := func(name string, sd float64, dims ...int) tensor {
		t := newTensor(name, dims...)
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64() * sd)
		}
		return t
	}
	ones := func(name string, n int) tensor {
		t := newTensor(name, n)
		for i := range t.Data {
			t.Data[i] = 1
		}
		return t
	}
	nVocab := len(v.Tokens)
	inEmbd, inFF := 1/math.Sqrt(float64(s.Embd)), 1/math.Sqrt(float64(s.FF))
	g.Tensors = append(g.Tensors, random("token_embd.weight", 1, s.Embd, nVocab))
	for i := range s.Layers {
		b := fmt.Sprintf("blk.%d.", i)
		g.Tensors = append(g.Tensors,
			ones(b+"attn_norm.weight", s.Embd),
			random(b+"attn_q.weight", inEmbd, s.Embd, s.Embd),
			random(b+"attn_k.weight", inEmbd, s.Embd, kvDim),
			random(b+"attn_v.weight", inEmbd, s.Embd, kvDim),
			random(b+"attn_output.weight", inEmbd, s.Embd, s.Embd),
			ones(b+"ffn_norm.weight", s.Embd),
			random(b+"ffn_gate.weight", inEmbd, s.Embd, s.FF),
			random(b+"ffn_up.weight", inEmbd, s.Embd, s.FF),
			random(b+"ffn_down.weight", inFF, s.FF, s.Embd),
		)
	}
	g.Tensors = append(g.Tensors, ones("output_norm.weight", s.Embd))
	// The output's rows: logits of about ±8 for the pieces, 0 for the
	// control and byte tokens, which therefore never reach a top-k.
	out := random("output.weight", 8*inEmbd, s.Embd, nVocab)
	for id, typ := range v.Types {
		if typ != tokenNormal {
			clear(out.Data[id*s.Embd : (id+1)*s.Embd])
		}
	}
	g.Tensors = append(g.Tensors, out)
	return g
}

func newTensor(name string, dims ...int) tensor {
	t := tensor{Name: name}
	n := 1
	for _, d := range dims {
		t.Dims = append(t.Dims, uint64(d))
		n *= d
	}
	t.Data = make([]float32, n)
	return t
}
