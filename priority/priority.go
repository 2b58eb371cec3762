// Package priority classifies requests into high, medium and low, names
// the verdicts admission gives them, and holds the priority block's config
// (the default priority, the high reserve, the medium floor).
//
// Nothing here knows about Caddy or HTTP; the caller supplies the priority
// claim as a string and the current time.
package priority

import "strings"

// Priority is a request's class. The zero value is Low so that an
// unclassified request is never given more than it asked for.
type Priority uint8

const (
	Low Priority = iota
	Medium
	High
)

// Count is the number of priorities, for arrays indexed by Priority.
const Count = 3

var names = [Count]string{"low", "medium", "high"}

// String returns "low", "medium" or "high".
func (p Priority) String() string {
	if int(p) < len(names) {
		return names[p]
	}
	return "unknown"
}

// Parse reads a priority claim case-insensitively, ignoring surrounding
// spaces. It does not allocate.
func Parse(s string) (Priority, bool) {
	switch s { // the common spellings, without trimming or folding
	case "high":
		return High, true
	case "medium":
		return Medium, true
	case "low":
		return Low, true
	}
	s = strings.TrimSpace(s)
	for i, n := range names {
		if strings.EqualFold(s, n) {
			return Priority(i), true
		}
	}
	return Low, false
}

// Classify returns the claimed priority, or def when the claim is empty or
// not one of the three names.
func Classify(claim string, def Priority) Priority {
	if p, ok := Parse(claim); ok {
		return p
	}
	return def
}
