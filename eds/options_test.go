package eds

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestOptionsRefuseBadLimits: a negative xDS limit, or a traffic distribution
// Horizon does not know, is refused with an error naming its flag; the flags'
// defaults validate.
func TestOptionsRefuseBadLimits(t *testing.T) {
	for _, tc := range []struct {
		flag, value string
	}{
		{"--xds-max-streams", "-1"},
		{"--xds-new-stream-rate", "-0.5"},
		{"--xds-new-stream-burst", "-1"},
		{"--xds-new-stream-wait", "-1s"},
		{"--xds-request-rate", "-2"},
		{"--xds-request-burst", "-1"},
		{"--traffic-distribution", "Nearby"},
	} {
		t.Run(tc.flag, func(t *testing.T) {
			var o Options
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			o.AddFlags(fs)
			if err := fs.Parse([]string{tc.flag + "=" + tc.value}); err != nil {
				t.Fatal(err)
			}
			err := o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.flag+":") {
				t.Fatalf("got %v, want an error naming %s", err, tc.flag)
			}
		})
	}
	var o Options
	o.AddFlags(pflag.NewFlagSet("test", pflag.ContinueOnError))
	if err := o.Validate(); err != nil {
		t.Fatalf("the defaults do not validate: %v", err)
	}
}
