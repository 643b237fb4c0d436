package forge

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestInternalAddr(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		addr     string
		internal bool
	}{
		{"127.0.0.1", true}, {"10.1.2.3", true}, {"192.168.0.1", true}, {"172.16.5.4", true},
		{"169.254.169.254", true}, {"0.0.0.0", true}, {"0.1.2.3", true}, {"100.64.0.1", true},
		{"100.127.255.254", true}, {"198.18.0.1", true}, {"240.0.0.1", true}, {"255.255.255.255", true},
		{"::1", true}, {"fe80::1", true}, {"fc00::1", true}, {"::ffff:127.0.0.1", true},
		{"64:ff9b::a00:1", true}, {"::", true},
		{"93.184.216.34", false}, {"100.128.0.1", false}, {"2606:4700::1111", false},
	} {
		assert.Equal(t, tc.internal, internalAddr(netip.MustParseAddr(tc.addr)), tc.addr)
	}
}
