package llmsim

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"
)

// maxBody bounds request bodies: prompts are text, 8 MiB is plenty.
const maxBody = 8 << 20

// genRequest is what the simulator needs from a completion request.
type genRequest struct {
	chat       bool // /v1/chat/completions rather than /v1/completions
	prompt     int  // prompt tokens
	maxTokens  int  // tokens to generate
	explicitMx bool // the request named max_tokens: finishing there is "length"
	stream     bool
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type completionBody struct {
	Model               string          `json:"model"`
	Messages            []chatMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	MaxTokens           *int            `json:"max_tokens"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Stream              bool            `json:"stream"`
}

// parseGenRequest decodes and checks a completion request; its errors are
// meant for the client (400).
func parseGenRequest(w http.ResponseWriter, r *http.Request, chat bool, cfg Config) (genRequest, error) {
	var b completionBody
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody)).Decode(&b); err != nil {
		return genRequest{}, fmt.Errorf("invalid JSON body: %w", err)
	}
	g := genRequest{chat: chat, stream: b.Stream, maxTokens: cfg.DefaultMaxTokens}
	var chars int
	if chat {
		if len(b.Messages) == 0 {
			return g, errors.New("messages: must be a non-empty array")
		}
		for i, m := range b.Messages {
			n, err := contentChars(m.Content)
			if err != nil {
				return g, fmt.Errorf("messages[%d].content: %v", i, err)
			}
			chars += n
		}
	} else {
		n, err := promptChars(b.Prompt)
		if err != nil {
			return g, fmt.Errorf("prompt: %v", err)
		}
		chars = n
	}
	g.prompt = max(1, chars/4)
	mx := b.MaxTokens
	if mx == nil {
		mx = b.MaxCompletionTokens
	}
	if mx != nil {
		if *mx < 1 {
			return g, fmt.Errorf("max_tokens: %d: must be ≥ 1", *mx)
		}
		g.maxTokens, g.explicitMx = min(*mx, cfg.MaxTokensLimit), true
	}
	return g, nil
}

// contentChars counts the characters of a message content: a string, an
// array of parts ({"type":"text","text":…}), or null.
func contentChars(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return utf8.RuneCountInString(s), nil
	}
	var parts []struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return 0, errors.New("must be a string or an array of content parts")
	}
	n := 0
	for _, p := range parts {
		n += utf8.RuneCountInString(p.Text)
	}
	return n, nil
}

// promptChars counts the characters of a legacy completion prompt: a string
// or an array of strings.
func promptChars(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, errors.New("required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return utf8.RuneCountInString(s), nil
	}
	var ss []string
	if err := json.Unmarshal(raw, &ss); err != nil {
		return 0, errors.New("must be a string or an array of strings")
	}
	n := 0
	for _, s := range ss {
		n += utf8.RuneCountInString(s)
	}
	return n, nil
}

// tokenText is the i-th pseudo-token as streamed: joined, the pieces read
// "tok0 tok1 tok2 …".
func tokenText(i int) string {
	if i == 0 {
		return "tok0"
	}
	return fmt.Sprintf(" tok%d", i)
}

func tokensText(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(tokenText(i))
	}
	return b.String()
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type message struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type choice struct {
	Index        int      `json:"index"`
	Message      *message `json:"message,omitempty"`
	Delta        *message `json:"delta,omitempty"`
	Text         *string  `json:"text,omitempty"`
	FinishReason *string  `json:"finish_reason"`
}

type completion struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

type apiError struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	Code    int    `json:"code"`
}

// writeError answers with an OpenAI-style error body.
func writeError(w http.ResponseWriter, status int, msg string) {
	typ := "invalid_request_error"
	if status >= 500 {
		typ = "server_error"
	}
	writeJSON(w, status, struct {
		Error apiError `json:"error"`
	}{apiError{Message: msg, Type: typ, Code: status}})
}

// writeFull refuses a request the full queue cannot take, as the server
// cfg.FullAnswer names does (bodies and statuses as those servers write
// them).
func (s *Server) writeFull(w http.ResponseWriter) {
	switch s.cfg.FullAnswer {
	case FullOllama:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "server busy, please try again.  maximum pending requests exceeded"})
	case FullTGI:
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "Model is overloaded", "error_type": "overloaded"})
	default:
		writeError(w, http.StatusTooManyRequests, errQueueFull.Error())
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only plain structs and maps reach here
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
