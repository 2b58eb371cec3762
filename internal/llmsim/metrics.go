package llmsim

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Labels real exporters put on these series, so that scrape configurations
// written for vLLM and DCGM exporter work against the simulator unchanged.
const (
	GPUUUID  = "GPU-00000000-0000-0000-0000-000000000000"
	GPUModel = "NVIDIA H100 80GB HBM3 (simulated)"
)

// KVCacheUsage is the vLLM saturation gauge, 0–1: memory above the weights
// over memory available above the weights. Queued requests' buffers count
// too: they are what fills the card when the queue grows, and the gauge must
// rise with them for a shedder reading it to see the overload coming.
func (c Config) KVCacheUsage(memUsed int64) float64 {
	d := c.withDefaults()
	u := float64(memUsed-d.BaseMemory) / float64(d.TotalMemory-d.BaseMemory)
	return min(1, max(0, u))
}

// handleMetrics writes Prometheus text exposition format 0.0.4.
func (s *Server) handleMetrics(w http.ResponseWriter) {
	snap := s.sched.snapshot()
	c := s.cfg
	vl := `model_name="` + labelValue(c.ModelName) + `",engine="0"`
	dl := `gpu="0",UUID="` + GPUUUID + `",device="nvidia0",modelName="` + GPUModel + `"`
	kv := c.KVCacheUsage(snap.MemUsed)
	usedMiB, totalMiB := snap.MemUsed/MiB, c.TotalMemory/MiB

	var b bytes.Buffer
	metric := func(name, typ, help, labels string, v float64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		if labels != "" {
			labels = "{" + labels + "}"
		}
		fmt.Fprintf(&b, "%s%s %s\n", name, labels, strconv.FormatFloat(v, 'g', -1, 64))
	}
	metric("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", vl, float64(snap.Running))
	metric("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", vl, float64(snap.Waiting))
	metric("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", vl, kv)
	metric("vllm:gpu_cache_usage_perc", "gauge", "GPU KV-cache usage. 1 means 100 percent usage (deprecated name).", vl, kv)
	metric("vllm:request_success_total", "counter", "Count of successfully processed requests.", vl, float64(snap.Served))
	metric("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", dl, float64(usedMiB))
	metric("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", dl, float64(max(0, totalMiB-usedMiB)))
	metric("llmsim_oom_total", "counter", "Requests refused with a simulated CUDA out-of-memory error.", "", float64(snap.OOMs))
	metric("llmsim_rejected_total", "counter", "Requests refused because the queue was at its limit.", "", float64(snap.Rejected))
	metric("llmsim_cancelled_total", "counter", "Requests whose client left before they finished.", "", float64(snap.Canceled))
	metric("llmsim_slots", "gauge", "Batch slots currently configured.", "", float64(snap.Slots))
	metric("llmsim_memory_used_bytes", "gauge", "Simulated GPU memory in use.", "", float64(snap.MemUsed))
	metric("llmsim_memory_total_bytes", "gauge", "Simulated GPU memory in total.", "", float64(c.TotalMemory))

	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b.Bytes())
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// labelValue escapes a label value as the text format wants: backslash,
// double quote and newline only (Go's %q would also escape non-ASCII).
func labelValue(v string) string { return labelEscaper.Replace(v) }
