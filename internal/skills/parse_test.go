package skills

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestParse(t *testing.T) {
	long := strings.Repeat("d", MaxDescriptionLength+1)
	tests := []struct {
		name     string
		text     string
		wantMeta Meta
		wantBody string
		// wantErr is a part of the error message; "" means success.
		wantErr string
	}{
		{
			name:     "minimal",
			text:     "---\nname: pdf\ndescription: Fill PDF forms.\n---\n# PDF\n\nSteps.\n",
			wantMeta: Meta{Name: "pdf", Description: "Fill PDF forms."},
			wantBody: "# PDF\n\nSteps.\n",
		},
		{
			name:     "BOM, CRLF and blanks after the delimiters",
			text:     "\ufeff--- \r\nname: pdf\r\ndescription: x\r\n---\t\r\nbody\r\n",
			wantMeta: Meta{Name: "pdf", Description: "x"},
			wantBody: "body\r\n",
		},
		{
			name:    "front matter over its cap",
			text:    "---\nname: a\ndescription: b\nlist:\n" + strings.Repeat("- x\n", MaxFrontMatterBytes/4) + "---\n",
			wantErr: "at most 16384 are allowed",
		},
		{
			name:     "no body, no final newline",
			text:     "---\nname: a\ndescription: b\n---",
			wantMeta: Meta{Name: "a", Description: "b"},
		},
		{
			name: "extra keys, nested maps with non-string keys made JSON-safe",
			text: "---\nname: a\ndescription: >\n  folded\n  text\nlicense: MIT\nmetadata:\n  1: one\n  tags: [x, y]\n---\n",
			wantMeta: Meta{Name: "a", Description: "folded text", Extra: map[string]any{
				"license":  "MIT",
				"metadata": map[string]any{"1": "one", "tags": []any{"x", "y"}},
			}},
		},
		{
			name:     "floats JSON cannot hold become text",
			text:     "---\nname: a\ndescription: b\nx: [.nan, -.inf]\n---\n",
			wantMeta: Meta{Name: "a", Description: "b", Extra: map[string]any{"x": []any{"NaN", "-Inf"}}},
		},
		{name: "empty text", text: "", wantErr: "must start with YAML front matter"},
		{name: "no front matter", text: "# PDF\nname: pdf\n", wantErr: "must start with YAML front matter"},
		{name: "front matter not at the top", text: "\n---\nname: a\ndescription: b\n---\n", wantErr: "must start with YAML front matter"},
		{name: "not closed", text: "---\nname: a\ndescription: b\n", wantErr: "not closed"},
		{name: "only an opening line", text: "---", wantErr: "not closed"},
		{name: "empty front matter", text: "---\n---\nbody", wantErr: "front matter is empty"},
		{name: "bad YAML", text: "---\nname: [a\ndescription: b\n---\n", wantErr: "not valid YAML"},
		{name: "duplicate key", text: "---\nname: a\nname: b\ndescription: c\n---\n", wantErr: "not valid YAML"},
		{name: "a list", text: "---\n- name: a\n---\n", wantErr: "must be a YAML mapping"},
		{name: "a scalar", text: "---\nhello\n---\n", wantErr: "must be a YAML mapping"},
		{name: "missing name", text: "---\ndescription: b\n---\n", wantErr: "has no name"},
		{name: "null name", text: "---\nname:\ndescription: b\n---\n", wantErr: "has no name"},
		{name: "name not a string", text: "---\nname: 12\ndescription: b\n---\n", wantErr: "name must be a string"},
		{name: "invalid name", text: "---\nname: ../etc\ndescription: b\n---\n", wantErr: "front matter name: skill name"},
		{name: "missing description", text: "---\nname: a\n---\n", wantErr: "has no description"},
		{name: "blank description", text: "---\nname: a\ndescription: \"  \"\n---\n", wantErr: "description is empty"},
		{name: "description not a string", text: "---\nname: a\ndescription: [x]\n---\n", wantErr: "description must be a string"},
		{name: "description too long", text: "---\nname: a\ndescription: " + long + "\n---\n", wantErr: "at most 1024"},
		{name: "too large", text: "---\nname: a\ndescription: b\n---\n" + strings.Repeat("x", MaxSkillBytes), wantErr: "at most 262144"},
		{name: "NUL byte", text: "---\nname: a\ndescription: b\n---\n\x00", wantErr: "UTF-8 text"},
		{name: "invalid UTF-8", text: "---\nname: a\ndescription: b\n---\n\xff", wantErr: "UTF-8 text"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			meta, body, err := Parse(tt.text)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse error = %v, want one containing %q", err, tt.wantErr)
				}
				if !errdefs.IsInvalidArgument(err) {
					t.Errorf("Parse error %v is not classed invalid argument", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(meta, tt.wantMeta) {
				t.Errorf("meta = %#v, want %#v", meta, tt.wantMeta)
			}
			if body != tt.wantBody {
				t.Errorf("body = %q, want %q", body, tt.wantBody)
			}
			if _, err := json.Marshal(meta.Extra); err != nil {
				t.Errorf("Extra does not encode as JSON: %v", err)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	tests := []struct {
		name    string
		wantErr string
	}{
		{"ok-name_1.2+3", ""},
		{"a", ""},
		{"PDF", ""},
		{"a..b", ""},
		{strings.Repeat("x", MaxNameLength), ""},
		{"", "empty"},
		{".hidden", "must not start with \".\""},
		{".", "must not start with \".\""},
		{"..", "must not start with \".\""},
		{"-rf", "must not start with \"-\""},
		{"a/b", "contains '/'"},
		{"/", "contains '/'"},
		{"a b", "contains ' '"},
		{"a\x00b", "contains '\\x00'"},
		{"é", "contains 'é'"},
		{"a\\b", "contains '\\\\'"},
		{strings.Repeat("x", MaxNameLength+1), "65 bytes long; at most 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateName(tt.name)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidateName(%q) = %v, want nil", tt.name, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ValidateName(%q) = %v, want an error containing %q", tt.name, err, tt.wantErr)
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("ValidateName(%q) error is not classed invalid argument", tt.name)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"---\nname: pdf\ndescription: Fill PDF forms.\n---\n# PDF\n",
		"\ufeff---\r\nname: a\r\ndescription: b\r\n---\r\n",
		"---\nname: a\ndescription: b\nx: &a [*a, *a]\n---\n",
		"---\nname: a\ndescription: b\nm: {1: 2, [x]: y}\n---\n",
		"---\n- a\n---\n",
		"---\nname: a\ndescription: b\nx: [.nan, -.inf, !!binary aGk=, 2001-12-14]\n---\n",
		"---\n",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		meta, body, err := Parse(text)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not classed invalid argument", err)
			}
			return
		}
		if err := ValidateName(meta.Name); err != nil {
			t.Fatalf("accepted name %q: %v", meta.Name, err)
		}
		if strings.TrimSpace(meta.Description) == "" {
			t.Fatalf("accepted an empty description")
		}
		if !strings.HasSuffix(text, body) {
			t.Fatalf("body %q is not the end of the text", body)
		}
		if _, err := json.Marshal(meta.Extra); err != nil {
			t.Fatalf("Extra does not encode as JSON: %v", err)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"ok-name_1.2+3", "", ".", "..", "a/b", ".hidden", "-x", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		if name == "" || len(name) > MaxNameLength || strings.ContainsAny(name, "/\\\x00") ||
			strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if r >= 0x80 || r <= ' ' {
				t.Fatalf("accepted %q with %q", name, r)
			}
		}
	})
}
