package rules

// validateUpstreamConns resolves the deprecated upstream.max_idle_conns into
// max_conns and checks that both connection budgets can hold a connection.
func (d *decoder) validateUpstreamConns(u *Upstream) {
	if line := d.lineOf(u, "max_idle_conns"); line > 0 {
		if d.lineOf(u, "max_conns") > 0 {
			d.errorf(line, "upstream: max_idle_conns is the old name of max_conns; give only max_conns")
		} else if u.MaxIdleConns != 0 { // 0 or empty kept the default, as it always did
			u.MaxConns = u.MaxIdleConns
		}
	}
	u.MaxIdleConns = 0 // resolved: MaxConns is the one to read
	for _, b := range []struct {
		key string
		n   int
	}{{"max_conns", u.MaxConns}, {"max_streams", u.MaxStreams}} {
		if b.n < 1 {
			line := d.lineOf(u, b.key)
			if b.key == "max_conns" && line == 0 {
				line = d.lineOf(u, "max_idle_conns")
			}
			d.errorf(line, "upstream.%s: must be at least 1, not %d", b.key, b.n)
		}
	}
}
