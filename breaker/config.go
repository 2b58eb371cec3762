package breaker

import "github.com/ai-guardian/adaptivethrottle/config"

// MarshalJSON writes the block with its written zeros.
func (c CircuitConfig) MarshalJSON() ([]byte, error) {
	type plain CircuitConfig
	return config.MarshalBlock(plain(c), c.Zeros)
}

// UnmarshalJSON reads the block, recording the keys written as zero.
func (c *CircuitConfig) UnmarshalJSON(b []byte) (err error) {
	type plain CircuitConfig
	c.Zeros, err = config.UnmarshalBlock(b, (*plain)(c))
	return err
}
