package webchannel

import (
	"errors"
	"strings"
	"testing"
)

// Bodies as firebase 12.19.0 sent them to the Firestore emulator.
const (
	openBody = "headers=X-Goog-Api-Client%3Agl-js%2F%20fire%2F12.19.0%0D%0AContent-Type%3Atext%2Fplain%0D%0A" +
		"Authorization%3ABearer%20tok%3Aen%0D%0Ax-goog-api-key%3Afake-key%0D%0A" +
		"&count=1&ofs=0&req0___data__=%7B%22database%22%3A%22projects%2Fh6spy%2Fdatabases%2F(default)%22%7D"
	writeBody = "count=1&ofs=3&req0___data__=%7B%22streamToken%22%3A%22Mg%3D%3D%22%2C%22writes%22%3A%5B%7B%22delete%22" +
		"%3A%22projects%2Fh6spy%2Fdatabases%2F(default)%2Fdocuments%2Fproducts%2Fp2%22%7D%5D%7D"
)

func TestParseForwardSDKBodies(t *testing.T) {
	f, err := ParseForward([]byte(openBody))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Headers.Get("Authorization"); got != "Bearer tok:en" {
		t.Errorf("Authorization = %q, want the value after the first colon", got)
	}
	if got := f.Headers.Get("X-Goog-Api-Key"); got != "fake-key" {
		t.Errorf("x-goog-api-key = %q", got)
	}
	if len(f.Maps) != 1 || f.Maps[0].ID != 0 || string(f.Maps[0].Data) != `{"database":"projects/h6spy/databases/(default)"}` {
		t.Errorf("maps = %+v", f.Maps)
	}

	f, err = ParseForward([]byte(writeBody))
	if err != nil {
		t.Fatal(err)
	}
	if f.Headers != nil {
		t.Errorf("headers = %v on a POST without them", f.Headers)
	}
	if len(f.Maps) != 1 || f.Maps[0].ID != 3 || !strings.Contains(string(f.Maps[0].Data), `"delete"`) {
		t.Errorf("maps = %+v", f.Maps)
	}
}

func TestParseForwardOrdersMapsByID(t *testing.T) {
	f, err := ParseForward([]byte("req1___data__=%7B%7D&count=3&req2_other=x&ofs=7&req0___data__=%5B%5D"))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		id   int64
		data string
	}{{7, "[]"}, {8, "{}"}, {9, ""}}
	for i, w := range want {
		if f.Maps[i].ID != w.id || string(f.Maps[i].Data) != w.data {
			t.Errorf("map %d = {%d %q}, want {%d %q}", i, f.Maps[i].ID, f.Maps[i].Data, w.id, w.data)
		}
	}
}

func TestParseForwardEmpty(t *testing.T) {
	f, err := ParseForward([]byte("count=0"))
	if err != nil || len(f.Maps) != 0 {
		t.Fatalf("count=0: %+v, %v", f, err)
	}
}

func TestParseForwardRejects(t *testing.T) {
	for name, body := range map[string]string{
		"no count":           "ofs=0&req0___data__=x",
		"count not a number": "count=x&ofs=0",
		"negative count":     "count=-1&ofs=0",
		"count too large":    "count=1001&ofs=0",
		"no ofs":             "count=1&req0___data__=x",
		"ofs not a number":   "count=1&ofs=1e3&req0___data__=x",
		"missing message":    "count=2&ofs=0&req0___data__=x",
		"index past count":   "count=1&ofs=0&req0___data__=x&req1___data__=y",
		"bad req field":      "count=1&ofs=0&req0___data__=x&reqx=y",
		"repeated data":      "count=1&ofs=0&req0___data__=x&req0___data__=y",
		"repeated count":     "count=1&count=1&ofs=0&req0___data__=x",
		"bad escape":         "count=1&ofs=0&req0___data__=%zz",
		"bad header line":    "headers=nocolon%0D%0A&count=0",
		"bad header name":    "headers=a%20b%3Ac%0D%0A&count=0",
		"repeated headers":   "headers=a%3Ab&headers=a%3Ab&count=0",
	} {
		if _, err := ParseForward([]byte(body)); !errors.Is(err, ErrForward) {
			t.Errorf("%s: err = %v, want ErrForward", name, err)
		}
	}
}

func TestForwardErrorsDoNotEchoInput(t *testing.T) {
	secret := "Bearer%20s3cr3t"
	_, err := ParseForward([]byte("headers=" + secret + "&count=0"))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzForward(f *testing.F) {
	for _, s := range []string{openBody, writeBody, "count=0", "count=2&ofs=5&req0___data__=a&req1_x=b", "headers=a%3Ab"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		fw, err := ParseForward(body)
		if err != nil {
			if !errors.Is(err, ErrForward) {
				t.Fatalf("error %v does not wrap ErrForward", err)
			}
			return
		}
		for i := 1; i < len(fw.Maps); i++ {
			if fw.Maps[i].ID != fw.Maps[i-1].ID+1 {
				t.Fatalf("map ids not consecutive: %d then %d", fw.Maps[i-1].ID, fw.Maps[i].ID)
			}
		}
		if len(fw.Maps) > MaxMapsPerPost {
			t.Fatalf("%d maps", len(fw.Maps))
		}
	})
}
