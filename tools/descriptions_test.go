package tools

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/mcpproxy"
	mcpclient "github.com/mark3labs/mcp-go/client"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// TestPublishedDescriptions checks that every argument and result
// description a client sees is the whole text written in its struct tag.
// invopop/jsonschema splits tags on unescaped commas, so a description with
// a plain comma is published cut at it ("(lower-case letters").
func TestPublishedDescriptions(t *testing.T) {
	source := tagDescriptions(t)
	if len(source) == 0 {
		t.Fatal("found no description= tags in the source")
	}
	published := 0
	for _, tool := range listedTools(t) {
		data, err := json.Marshal(tool)
		if err != nil {
			t.Fatal(err)
		}
		var def map[string]any
		if err := json.Unmarshal(data, &def); err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{"inputSchema", "outputSchema"} {
			walkPropertyDescriptions(def[key], func(prop, desc string) {
				published++
				if !source[desc] {
					t.Errorf("%s %s.%s: published description %q is not the text of any description= tag (cut at a comma? escape it as \\\\,; description= must come last in the tag)", tool.Name, key, prop, desc)
				}
				if strings.Count(desc, "(") != strings.Count(desc, ")") || strings.Count(desc, "[") != strings.Count(desc, "]") {
					t.Errorf("%s %s.%s: unbalanced brackets in %q", tool.Name, key, prop, desc)
				}
			})
		}
	}
	if published == 0 {
		t.Fatal("no tool publishes a property description")
	}
}

// tagDescriptions reads every non-test Go file of the module and returns
// the description= texts of its jsonschema tags, unescaped as the schema
// should show them.
func tagDescriptions(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "vendor") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			field, ok := n.(*ast.Field)
			if !ok || field.Tag == nil {
				return true
			}
			raw, err := strconv.Unquote(field.Tag.Value)
			if err != nil {
				t.Errorf("%s: tag %s: %v", fset.Position(field.Pos()), field.Tag.Value, err)
				return true
			}
			tag := reflect.StructTag(raw).Get("jsonschema")
			_, desc, ok := strings.Cut(tag, "description=")
			if !ok {
				return true
			}
			out[strings.ReplaceAll(desc, `\,`, ",")] = true
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// walkPropertyDescriptions calls fn for every property of schema, at any
// depth, that has a description.
func walkPropertyDescriptions(schema any, fn func(prop, desc string)) {
	switch v := schema.(type) {
	case map[string]any:
		if props, ok := v["properties"].(map[string]any); ok {
			for name, p := range props {
				if m, ok := p.(map[string]any); ok {
					if d, ok := m["description"].(string); ok {
						fn(name, d)
					}
				}
			}
		}
		for _, child := range v {
			walkPropertyDescriptions(child, fn)
		}
	case []any:
		for _, child := range v {
			walkPropertyDescriptions(child, fn)
		}
	}
}

// listedTools is tools/list as a client sees it, every tool registered.
func listedTools(t *testing.T) []mcp.Tool {
	t.Helper()
	s := server.NewMCPServer("berth-test", "1", server.WithToolCapabilities(true))
	Register(s, Deps{MCP: new(mcpproxy.Supervisor)})
	c, err := mcpclient.NewInProcessClient(s)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	init := mcp.InitializeRequest{}
	init.Params.ProtocolVersion = mcp.LATEST_PROTOCOL_VERSION
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatal(err)
	}
	res, err := c.ListTools(ctx, mcp.ListToolsRequest{})
	if err != nil {
		t.Fatalf("tools/list: %v", err)
	}
	return res.Tools
}
