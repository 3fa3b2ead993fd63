package openairelay

import "testing"

func TestJoinQuery(t *testing.T) {
	tests := []struct{ upstream, client, want string }{
		{"", "", ""},
		{"", "limit=2", "limit=2"},
		{"api-version=2024-10-21", "", "api-version=2024-10-21"},
		{"api-version=2024-10-21", "limit=2&after=file-x", "api-version=2024-10-21&limit=2&after=file-x"},
		{"api-version=2024-10-21", "api-version=1999-01-01&limit=2", "api-version=2024-10-21&limit=2"},
		{"api-version=2024-10-21", "api%2Dversion=x", "api-version=2024-10-21"},
	}
	for _, tt := range tests {
		if got := joinQuery(tt.upstream, tt.client); got != tt.want {
			t.Errorf("joinQuery(%q, %q) = %q; want %q", tt.upstream, tt.client, got, tt.want)
		}
	}
}
