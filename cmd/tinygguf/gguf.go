package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
)

// GGUF v3, little-endian: the header (magic, version, tensor count,
// metadata count), the metadata key-values, the tensor infos, zero padding
// to the alignment, then each tensor's data at its offset from there, each
// offset a multiple of the alignment.
const (
	ggufMagic     = "GGUF"
	ggufVersion   = 3
	ggufAlignment = 32
)

// GGUF metadata value types.
const (
	typeUint32  uint32 = 4
	typeInt32   uint32 = 5
	typeFloat32 uint32 = 6
	typeBool    uint32 = 7
	typeString  uint32 = 8
	typeArray   uint32 = 9
)

// ggmlTypeF32 is the ggml tensor type of 32-bit floats, the only one
// written here.
const ggmlTypeF32 uint32 = 0

// kv is one metadata key-value; Value is a uint32, int32, float32, bool,
// string, []string, []float32 or []int32.
type kv struct {
	Key   string
	Value any
}

// tensor is one F32 tensor. Dims are ggml's: Dims[0] is the length of a
// row, which is contiguous in Data; len(Data) is the product of Dims.
type tensor struct {
	Name string
	Dims []uint64
	Data []float32
}

// gguf is a whole file's content.
type gguf struct {
	KV      []kv
	Tensors []tensor
}

// writeTo writes g as GGUF v3; it refuses a value of an unknown type or a
// tensor whose data does not match its dimensions.
func (g gguf) writeTo(out io.Writer) error {
	w := &ggufWriter{w: bufio.NewWriterSize(out, 1<<20)}
	w.bytes([]byte(ggufMagic))
	w.u32(ggufVersion)
	w.u64(uint64(len(g.Tensors)))
	w.u64(uint64(len(g.KV)))
	for _, e := range g.KV {
		w.str(e.Key)
		if err := w.value(e.Value); err != nil {
			return fmt.Errorf("gguf: %s: %w", e.Key, err)
		}
	}
	var offset uint64
	for _, t := range g.Tensors {
		n := uint64(1)
		for _, d := range t.Dims {
			n *= d
		}
		if n != uint64(len(t.Data)) {
			return fmt.Errorf("gguf: tensor %s: %d values for dimensions %v", t.Name, len(t.Data), t.Dims)
		}
		w.str(t.Name)
		w.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			w.u64(d)
		}
		w.u32(ggmlTypeF32)
		w.u64(offset)
		offset = align(offset + 4*n)
	}
	w.pad()
	for _, t := range g.Tensors {
		for _, f := range t.Data {
			w.u32(math.Float32bits(f))
		}
		w.pad()
	}
	if w.err != nil {
		return w.err
	}
	return w.w.Flush()
}

func align(n uint64) uint64 { return (n + ggufAlignment - 1) / ggufAlignment * ggufAlignment }

// ggufWriter keeps the first error and the byte count (for the padding).
type ggufWriter struct {
	w   *bufio.Writer
	n   uint64
	err error
	buf [8]byte
}

func (w *ggufWriter) bytes(b []byte) {
	if w.err != nil {
		return
	}
	var k int
	k, w.err = w.w.Write(b)
	w.n += uint64(k)
}

func (w *ggufWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(w.buf[:4], v)
	w.bytes(w.buf[:4])
}

func (w *ggufWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(w.buf[:8], v)
	w.bytes(w.buf[:8])
}

func (w *ggufWriter) str(s string) {
	w.u64(uint64(len(s)))
	w.bytes([]byte(s))
}

func (w *ggufWriter) pad() {
	w.bytes(make([]byte, align(w.n)-w.n))
}

// value writes a metadata value's type and the value.
func (w *ggufWriter) value(v any) error {
	switch v := v.(type) {
	case uint32:
		w.u32(typeUint32)
		w.u32(v)
	case int32:
		w.u32(typeInt32)
		w.u32(uint32(v))
	case float32:
		w.u32(typeFloat32)
		w.u32(math.Float32bits(v))
	case bool:
		w.u32(typeBool)
		b := byte(0)
		if v {
			b = 1
		}
		w.bytes([]byte{b})
	case string:
		w.u32(typeString)
		w.str(v)
	case []string:
		w.u32(typeArray)
		w.u32(typeString)
		w.u64(uint64(len(v)))
		for _, s := range v {
			w.str(s)
		}
	case []float32:
		w.u32(typeArray)
		w.u32(typeFloat32)
		w.u64(uint64(len(v)))
		for _, f := range v {
			w.u32(math.Float32bits(f))
		}
	case []int32:
		w.u32(typeArray)
		w.u32(typeInt32)
		w.u64(uint64(len(v)))
		for _, i := range v {
			w.u32(uint32(i))
		}
	default:
		return fmt.Errorf("unsupported value type %T", v)
	}
	return nil
}
