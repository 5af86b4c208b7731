// Command goservice is a small stdlib-only HTTP service used by autopgo's
// tests and benchmarks. It exposes net/http/pprof and a few CPU-bound
// endpoints, and can generate load against itself so that its CPU profiles
// contain realistic server and client stacks, some of them labelled with
// pprof.Do.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"regexp"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type record struct {
	ID    int               `json:"id"`
	Name  string            `json:"name"`
	Score float64           `json:"score"`
	Tags  []string          `json:"tags"`
	Attrs map[string]string `json:"attrs"`
}

func makeRecords(n int, rng *rand.Rand) []record {
	out := make([]record, n)
	for i := range out {
		out[i] = record{
			ID:    i,
			Name:  "item-" + strconv.Itoa(rng.Intn(1_000_000)),
			Score: rng.Float64() * 100,
			Tags:  []string{"a", "b", strconv.Itoa(i % 7)},
			Attrs: map[string]string{"k": strconv.Itoa(i), "v": strings.Repeat("x", i%13)},
		}
	}
	return out
}

// handleJSON encodes, decodes and sorts records.
func handleJSON(w http.ResponseWriter, r *http.Request) {
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	recs := makeRecords(200, rng)
	data, err := json.Marshal(recs)
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	var back []record
	if err := json.Unmarshal(data, &back); err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	sort.Slice(back, func(i, j int) bool { return back[i].Score < back[j].Score })
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(back[:10])
}

// handleHash hashes a buffer repeatedly, labelled so that profiles carry labels.
func handleHash(w http.ResponseWriter, r *http.Request) {
	rounds, _ := strconv.Atoi(r.URL.Query().Get("rounds"))
	if rounds <= 0 {
		rounds = 300
	}
	var sum [32]byte
	pprof.Do(r.Context(), pprof.Labels("endpoint", "hash", "tier", tierOf(rounds)), func(context.Context) {
		buf := []byte("autopgo")
		for i := 0; i < rounds; i++ {
			sum = sha256.Sum256(buf)
			buf = sum[:]
		}
	})
	io.WriteString(w, hex.EncodeToString(sum[:]))
}

func tierOf(rounds int) string {
	if rounds > 500 {
		return "heavy"
	}
	return "light"
}

var wordRx = regexp.MustCompile(`[a-z]+[0-9]*`)

// handleText compresses and scans text.
func handleText(w http.ResponseWriter, r *http.Request) {
	var sb strings.Builder
	for i := 0; i < 400; i++ {
		fmt.Fprintf(&sb, "word%d lorem ipsum dolor %d sit amet ", i, i*i)
	}
	text := sb.String()
	var zbuf bytes.Buffer
	pprof.Do(r.Context(), pprof.Labels("endpoint", "text"), func(context.Context) {
		zw := gzip.NewWriter(&zbuf)
		_, _ = zw.Write([]byte(text))
		_ = zw.Close()
	})
	matches := wordRx.FindAllString(text, -1)
	counts := map[string]int{}
	for _, m := range matches {
		counts[m]++
	}
	fmt.Fprintf(w, "%d %d %d\n", zbuf.Len(), len(matches), len(counts))
}

// fib is deliberately recursive so that profiles contain recursive stacks.
func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

func handleFib(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintln(w, fib(22))
}

func load(addr string, workers int, stop <-chan struct{}) {
	client := &http.Client{Timeout: 10 * time.Second}
	paths := []string{"/work/json", "/work/hash", "/work/hash?rounds=900", "/work/text", "/work/fib"}
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for n := i; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get("http://" + addr + paths[n%len(paths)])
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}(i)
	}
	wg.Wait()
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	workers := flag.Int("load", 0, "number of goroutines generating load against this service")
	flag.Parse()

	http.HandleFunc("/work/json", handleJSON)
	http.HandleFunc("/work/hash", handleHash)
	http.HandleFunc("/work/text", handleText)
	http.HandleFunc("/work/fib", handleFib)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	// The bound address is the first line on stdout, so callers can use port 0.
	fmt.Println(ln.Addr().String())

	stop := make(chan struct{})
	if *workers > 0 {
		go load(ln.Addr().String(), *workers, stop)
	}
	srv := &http.Server{}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		close(stop)
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
