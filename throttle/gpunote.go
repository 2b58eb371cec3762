package throttle

import "go.uber.org/zap"

// logGPUNote logs what the GPU level's memory readings can and cannot judge
// when that changes (gpu.Level.Note): a server found to hold its memory
// whatever its load, a floor that moved, a note that no longer applies.
// Sampler only.
func (t *Throttle) logGPUNote() {
	seq, note := t.gpu.Note()
	if seq == t.gpuNote {
		return
	}
	t.gpuNote = seq
	if note == "" {
		t.logger.Load().Info("gpu memory readings judged against the threshold again", zap.String("name", t.name))
		return
	}
	t.logger.Load().Warn("gpu memory cannot judge load", zap.String("name", t.name), zap.String("note", note))
}
