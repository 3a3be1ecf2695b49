// Command render renders a Helm chart the way `helm template` does, for a
// machine without Helm: Go's text/template (the engine Helm runs) with
// Helm's objects (.Values, .Release, .Chart), `include`, and the few Sprig
// functions the chatroom chart uses, implemented here with Sprig's
// semantics. A function the chart uses that is not here fails the render,
// so the set cannot drift silently.
//
// Values and Chart.yaml come in as JSON (the caller converts YAML), values
// files are merged over the chart's like Helm does (maps merge, null
// deletes a key), numbers are float64 as in Helm.
//
//	render -chart DIR -chart-json Chart.json -values values.json [-values more.json]... [-notes]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	chartDir := flag.String("chart", "", "chart directory")
	chartJSON := flag.String("chart-json", "", "Chart.yaml as JSON")
	release := flag.String("release", "chatroom", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	notes := flag.Bool("notes", false, "render NOTES.txt instead of the manifests")
	var values multi
	flag.Var(&values, "values", "values as JSON (the chart's first, then overrides)")
	flag.Parse()
	out, err := render(*chartDir, *chartJSON, values, *release, *namespace, *notes)
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.WriteString(out)
}

func readJSON(path string) (map[string]interface{}, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v map[string]interface{}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v == nil {
		v = map[string]interface{}{}
	}
	return v, nil
}

// coalesce lays src over dst as Helm does: maps merge, a null deletes.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			dst[k] = coalesce(dm, sm)
		} else {
			dst[k] = v
		}
	}
	return dst
}

var semver = regexp.MustCompile(`^v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// chartObject is .Chart: Chart.yaml's fields with Helm's capitalised names.
func chartObject(meta map[string]interface{}) (map[string]interface{}, error) {
	if meta["apiVersion"] != "v2" {
		return nil, errors.New("Chart.yaml: apiVersion must be v2")
	}
	name, _ := meta["name"].(string)
	version, _ := meta["version"].(string)
	if name == "" || !semver.MatchString(version) {
		return nil, errors.New("Chart.yaml: name and a SemVer version are required")
	}
	chart := map[string]interface{}{}
	for k, v := range meta {
		chart[strings.ToUpper(k[:1])+k[1:]] = v
	}
	return chart, nil
}

func render(dir, chartJSON string, valueFiles []string, release, namespace string, notes bool) (string, error) {
	meta, err := readJSON(chartJSON)
	if err != nil {
		return "", err
	}
	chart, err := chartObject(meta)
	if err != nil {
		return "", err
	}
	values := map[string]interface{}{}
	for _, f := range valueFiles {
		v, err := readJSON(f)
		if err != nil {
			return "", err
		}
		values = coalesce(values, v)
	}
	top := map[string]interface{}{
		"Values": values,
		"Chart":  chart,
		"Release": map[string]interface{}{
			"Name": release, "Namespace": namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Template": map[string]interface{}{"BasePath": meta["name"].(string) + "/templates"},
	}
	files, err := filepath.Glob(filepath.Join(dir, "templates", "*"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	t := template.New("gotpl").Option("missingkey=zero")
	t.Funcs(funcs(t))
	var names []string
	for _, f := range files {
		base := filepath.Base(f)
		if !strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".tpl") && base != "NOTES.txt" {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		name := meta["name"].(string) + "/templates/" + base
		if _, err := t.New(name).Parse(string(src)); err != nil {
			return "", err
		}
		partial := strings.HasPrefix(base, "_")
		if notes == (base == "NOTES.txt") && !partial {
			names = append(names, name)
		}
	}
	var out strings.Builder
	for _, name := range names {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, top); err != nil {
			return "", fmt.Errorf("execution error: %w", err)
		}
		text := strings.ReplaceAll(buf.String(), "<no value>", "")
		if notes {
			out.WriteString(text)
			continue
		}
		for _, doc := range splitDocs(text) {
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", name, doc)
		}
	}
	return out.String(), nil
}

var docSep = regexp.MustCompile(`(?m)^---[ \t]*$`)

// splitDocs splits a rendered file into documents, dropping those with
// nothing but blanks and comments, as Helm does.
func splitDocs(text string) []string {
	var docs []string
	for _, doc := range docSep.Split(text, -1) {
		empty := true
		for _, line := range strings.Split(doc, "\n") {
			l := strings.TrimSpace(line)
			if l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, strings.Trim(doc, "\n"))
		}
	}
	return docs
}

// funcs is Helm's include, required, fail, toYaml and toJson, and the
// Sprig functions the chart uses, with Sprig's semantics.
func funcs(t *template.Template) template.FuncMap {
	return template.FuncMap{
		"include": func(name string, data interface{}) (string, error) {
			var buf bytes.Buffer
			if err := t.ExecuteTemplate(&buf, name, data); err != nil {
				return "", err
			}
			return buf.String(), nil
		},
		"required": func(msg string, v interface{}) (interface{}, error) {
			if v == nil {
				return nil, errors.New(msg)
			}
			if s, ok := v.(string); ok && s == "" {
				return nil, errors.New(msg)
			}
			return v, nil
		},
		"fail":   func(msg string) (string, error) { return "", errors.New(msg) },
		"toYaml": func(v interface{}) string { return strings.TrimSuffix(toYaml(v, 0), "\n") },
		"toJson": func(v interface{}) string {
			b, err := json.Marshal(v)
			if err != nil {
				return ""
			}
			return string(b)
		},
		"default": func(d interface{}, given ...interface{}) interface{} {
			if len(given) == 0 || empty(given[0]) {
				return d
			}
			return given[0]
		},
		"quote": func(vs ...interface{}) string {
			var out []string
			for _, v := range vs {
				if v != nil {
					out = append(out, strconv.Quote(strval(v)))
				}
			}
			return strings.Join(out, " ")
		},
		"list":     func(vs ...interface{}) []interface{} { return vs },
		"indent":   indent,
		"nindent":  func(n int, s string) string { return "\n" + indent(n, s) },
		"replace":  func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
		"contains": func(sub, s string) bool { return strings.Contains(s, sub) },
		"trimSuffix": func(suffix, s string) string {
			return strings.TrimSuffix(s, suffix)
		},
		"trunc": func(c int, s string) string {
			if c < 0 && len(s)+c > 0 {
				return s[:len(s)+c]
			}
			if c >= 0 && len(s) > c {
				return s[:c]
			}
			return s
		},
		"b64enc": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
		"sha256sum": func(s string) string {
			sum := sha256.Sum256([]byte(s))
			return hex.EncodeToString(sum[:])
		},
		"int":   func(v interface{}) int { return int(toInt64(v)) },
		"int64": toInt64,
		"mul": func(a interface{}, vs ...interface{}) int64 {
			p := toInt64(a)
			for _, v := range vs {
				p *= toInt64(v)
			}
			return p
		},
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

// empty is Sprig's: nil, zero numbers, false, and empty strings, maps
// and lists.
func empty(v interface{}) bool {
	r := reflect.ValueOf(v)
	if !r.IsValid() {
		return true
	}
	switch r.Kind() {
	case reflect.Array, reflect.Map, reflect.Slice, reflect.String:
		return r.Len() == 0
	case reflect.Bool:
		return !r.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return r.Int() == 0
	case reflect.Float32, reflect.Float64:
		return r.Float() == 0
	case reflect.Ptr, reflect.Interface:
		return r.IsNil()
	}
	return false
}

func strval(v interface{}) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case error:
		return v.Error()
	case fmt.Stringer:
		return v.String()
	}
	return fmt.Sprintf("%v", v)
}

func toInt64(v interface{}) int64 {
	switch v := v.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	case bool:
		if v {
			return 1
		}
	}
	return 0
}

// toYaml writes v in block style, keys sorted (as Helm's YAML marshaller
// does); strings are plain where YAML reads them back unchanged, else
// double-quoted in JSON syntax, which YAML reads the same.
func toYaml(v interface{}, level int) string {
	pad := strings.Repeat("  ", level)
	var b strings.Builder
	switch v := v.(type) {
	case map[string]interface{}:
		if len(v) == 0 {
			return "{}\n"
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(pad + scalar(k) + ":")
			child := v[k]
			if isBlock(child) {
				b.WriteString("\n" + toYaml(child, level+1))
			} else {
				b.WriteString(" " + strings.TrimSuffix(toYaml(child, 0), "\n") + "\n")
			}
		}
	case []interface{}:
		if len(v) == 0 {
			return "[]\n"
		}
		for _, item := range v {
			if isBlock(item) {
				inner := toYaml(item, level+1)
				b.WriteString(pad + "- " + strings.TrimPrefix(inner, pad+"  "))
			} else {
				b.WriteString(pad + "- " + strings.TrimSuffix(toYaml(item, 0), "\n") + "\n")
			}
		}
	default:
		return scalar(v) + "\n"
	}
	return b.String()
}

func isBlock(v interface{}) bool {
	switch v := v.(type) {
	case map[string]interface{}:
		return len(v) > 0
	case []interface{}:
		return len(v) > 0
	}
	return false
}

// plain is a string YAML reads back as the same string unquoted.
var plain = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_./-]*$`)

// special are words YAML 1.1 reads as booleans or null.
var special = map[string]bool{
	"y": true, "yes": true, "n": true, "no": true, "true": true, "false": true,
	"on": true, "off": true, "null": true,
}

func scalar(v interface{}) string {
	if v == nil {
		return "null"
	}
	if s, ok := v.(string); ok && plain.MatchString(s) && !special[strings.ToLower(s)] {
		return s
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
