/*
 * Open-loop constant-rate HTTP/1.1 load generator for the gateway benchmark.
 *
 * Why C: the benchmark measures a few hundred microseconds of gateway work per request on a
 * two-core machine. A Python client spends about as much CPU per request as the system it
 * measures, so it both steals a core and adds its own queueing to every figure. This one
 * spends a few microseconds per request (epoll, keep-alive connections, no allocation on the
 * request path) and prints its own CPU time so that claim can be checked.
 *
 * Honesty rules:
 * - Request i is due at t0 + i/rate whatever happened before (a timerfd ticks at the rate);
 *   its latency is counted from that due instant, so a slow server (or a late generator)
 *   shows up as queueing instead of being hidden by a closed loop.
 * - A request goes out on an idle keep-alive connection, or on a new connection if none is
 *   idle (connect time is part of its latency); past --max-conns it waits in a FIFO, still
 *   counting from its due instant.
 * - Only a complete response with status 2xx counts as a success. A reused connection that
 *   the server closed before sending a byte is retried once on a fresh connection (what
 *   keep-alive HTTP clients do); anything else is a failure.
 *
 * Output: one line per request to --out ("due_offset_us latency_us status overhead"), where
 * overhead is the x-unitcost-overhead-ms response header or "-"; then a JSON summary on stdout
 * with percentiles and the generator's own CPU time (getrusage).
 *
 * Build: gcc -O2 -o loadgen loadgen.c   (bench/gateway/run.py does this at run time)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADERS 16
#define TIMER_TAG UINT64_MAX

typedef struct {
    int64_t due_ns;       /* scheduled instant, CLOCK_MONOTONIC */
    int64_t latency_ns;   /* -1 until finished */
    int status;           /* HTTP status; 0 = transport failure or timeout */
    char overhead[16];    /* x-unitcost-overhead-ms header, "" if absent */
    int retried;
} Result;

enum { C_FREE, C_CONNECTING, C_BUSY, C_IDLE };

typedef struct {
    int fd;
    int state;
    int served;           /* responses completed on this connection */
    int64_t req;          /* index of the request in flight, -1 when none */
    char *out;            /* request bytes being written */
    size_t out_len, out_off;
    char *in;             /* response bytes read so far */
    size_t in_len, in_cap;
    int want_out;         /* EPOLLOUT registered */
} Conn;

static struct sockaddr_in g_addr;
static const char *g_host;
static const char *g_path = "/v1/chat/completions";
static char *g_body_tpl;
static char g_headers[4096];
static int g_epfd;
static Conn *g_conns;
static int g_max_conns = 4096;
static int g_open_conns;
static int *g_idle;       /* stack of idle connection indexes */
static int g_nidle;
static int64_t *g_pending; /* FIFO of requests waiting for a connection */
static int64_t g_pend_head, g_pend_tail;
static Result *g_res;
static int64_t g_total, g_done, g_retries, g_connects;

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void ep_set(Conn *c, int idx, int want_out) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0), .data.u64 = (uint64_t)idx};
    if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl mod");
    c->want_out = want_out;
}

/* The request text for request i: the body template with "{i}" replaced by i. */
static void build_request(Conn *c, int64_t i) {
    char body[8192];
    const char *mark = strstr(g_body_tpl, "{i}");
    int blen;
    if (mark) {
        blen = snprintf(body, sizeof body, "%.*s%lld%s", (int)(mark - g_body_tpl), g_body_tpl, (long long)i, mark + 3);
    } else {
        blen = snprintf(body, sizeof body, "%s", g_body_tpl);
    }
    size_t cap = (size_t)blen + strlen(g_headers) + strlen(g_path) + 256;
    c->out = realloc(c->out, cap);
    int n = snprintf(c->out, cap,
                     "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%s"
                     "Content-Length: %d\r\n\r\n%s",
                     g_path, g_host, g_headers, blen, body);
    c->out_len = (size_t)n;
    c->out_off = 0;
}

static void finish(int64_t i, int status, const char *overhead) {
    Result *r = &g_res[i];
    r->latency_ns = now_ns() - r->due_ns;
    r->status = status;
    if (overhead) snprintf(r->overhead, sizeof r->overhead, "%s", overhead);
    g_done++;
}

static void dispatch(int64_t i);
static int parse_response(int idx);

static void close_conn(int idx) {
    Conn *c = &g_conns[idx];
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->state = C_FREE;
    c->req = -1;
    c->in_len = 0;
    g_open_conns--;
}

static void remove_idle(int idx) {
    for (int k = 0; k < g_nidle; k++) {
        if (g_idle[k] == idx) {
            g_idle[k] = g_idle[--g_nidle];
            return;
        }
    }
}

/* The connection failed or was closed by the server. */
static void conn_failed(int idx) {
    if (getenv("LOADGEN_DEBUG")) fprintf(stderr, "conn %d failed: state %d errno %d in_len %zu\n", idx, g_conns[idx].state, errno, g_conns[idx].in_len);
    Conn *c = &g_conns[idx];
    int64_t i = c->req;
    int retry = i >= 0 && c->served > 0 && c->in_len == 0 && !g_res[i].retried;
    if (c->state == C_IDLE) remove_idle(idx);
    close_conn(idx);
    if (i < 0) return;
    if (retry) {
        g_res[i].retried = 1;
        g_retries++;
        dispatch(i);
    } else {
        finish(i, 0, NULL);
    }
}

static void try_write(int idx) {
    Conn *c = &g_conns[idx];
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EAGAIN) {
                if (!c->want_out) ep_set(c, idx, 1);
                return;
            }
            conn_failed(idx);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->want_out) ep_set(c, idx, 0);
}

static void start_on(int idx, int64_t i) {
    Conn *c = &g_conns[idx];
    c->req = i;
    c->in_len = 0;
    c->state = C_BUSY;
    build_request(c, i);
    try_write(idx);
}

static int open_conn(int64_t i) {
    int idx = -1;
    for (int k = 0; k < g_max_conns; k++) {
        if (g_conns[k].state == C_FREE) {
            idx = k;
            break;
        }
    }
    if (idx < 0) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = &g_conns[idx];
    c->fd = fd;
    c->served = 0;
    c->req = i;
    c->in_len = 0;
    build_request(c, i);
    g_open_conns++;
    g_connects++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u64 = (uint64_t)idx};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl add");
    c->want_out = 1;
    if (connect(fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS) {
        c->state = C_CONNECTING;
        conn_failed(idx);
        return -2;
    }
    c->state = C_CONNECTING;
    return idx;
}

static void dispatch(int64_t i) {
    if (g_nidle > 0) {
        int idx = g_idle[--g_nidle];
        start_on(idx, i);
        return;
    }
    if (g_open_conns < g_max_conns) {
        int idx = open_conn(i);
        if (idx != -1) return; /* connecting, or already failed and accounted */
    }
    g_pending[g_pend_tail++] = i;
}

static void became_idle(int idx) {
    Conn *c = &g_conns[idx];
    c->req = -1;
    c->in_len = 0;
    if (g_pend_head < g_pend_tail) {
        start_on(idx, g_pending[g_pend_head++]);
        return;
    }
    c->state = C_IDLE;
    g_idle[g_nidle++] = idx;
}

/* Returns the body length if the chunked body starting at p is complete, -1 if not yet. */
static long chunked_complete(const char *p, size_t len) {
    size_t off = 0;
    for (;;) {
        const char *eol = memmem(p + off, len - off, "\r\n", 2);
        if (!eol) return -1;
        long size = strtol(p + off, NULL, 16);
        off = (size_t)(eol - p) + 2;
        if (size == 0) {
            /* trailers end with an empty line */
            const char *end = memmem(p + off - 2, len - (off - 2), "\r\n\r\n", 4);
            if (!end) return -1;
            return (long)((end - p) + 4);
        }
        if (off + (size_t)size + 2 > len) return -1;
        off += (size_t)size + 2;
    }
}

/* Parse what has arrived; complete the request when the whole response is in. */
static void on_readable(int idx) {
    Conn *c = &g_conns[idx];
    int eof = 0;
    for (;;) {
        if (c->in_cap - c->in_len < 16384) {
            c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
            c->in = realloc(c->in, c->in_cap);
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == 0) {
            eof = 1;
            break;
        }
        if (n < 0) {
            if (errno == EAGAIN) break;
            conn_failed(idx);
            return;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < c->in_cap - c->in_len + (size_t)n) break; /* short read: nothing more queued now */
    }
    if (c->state != C_BUSY) { /* an idle connection closed by the server, or bytes nobody asked for */
        if (eof || c->in_len) conn_failed(idx);
        return;
    }
    if (!parse_response(idx) && eof) conn_failed(idx);
}

/* 1 when the response was complete (or broken) and the connection handled, 0 if more is due. */
static int parse_response(int idx) {
    Conn *c = &g_conns[idx];
    const char *head_end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
    if (!head_end) return 0;
    size_t head_len = (size_t)(head_end - c->in) + 4;
    int status = 0;
    if (c->in_len < 12 || sscanf(c->in, "HTTP/1.%*d %d", &status) != 1) {
        conn_failed(idx);
        return 1;
    }
    long content_length = -1;
    int chunked = 0, closing = 0;
    char overhead[16] = "";
    const char *line = memmem(c->in, head_len, "\r\n", 2) + 2;
    while (line < head_end) {
        const char *eol = memmem(line, (size_t)(head_end + 2 - line), "\r\n", 2);
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            while (*v == ' ') v++;
            size_t vlen = (size_t)(eol - v);
            if (nlen == 14 && !strncasecmp(line, "content-length", 14)) content_length = strtol(v, NULL, 10);
            else if (nlen == 17 && !strncasecmp(line, "transfer-encoding", 17)) chunked = vlen >= 7 && !strncasecmp(v, "chunked", 7);
            else if (nlen == 10 && !strncasecmp(line, "connection", 10)) closing = vlen >= 5 && !strncasecmp(v, "close", 5);
            else if (nlen == 22 && !strncasecmp(line, "x-unitcost-overhead-ms", 22) && vlen < sizeof overhead) {
                memcpy(overhead, v, vlen);
                overhead[vlen] = 0;
            }
        }
        line = eol + 2;
    }
    size_t body_have = c->in_len - head_len;
    if (chunked) {
        if (chunked_complete(c->in + head_len, body_have) < 0) return 0;
    } else if (content_length >= 0) {
        if (body_have < (size_t)content_length) return 0;
    } else {
        return 0; /* no length: complete at EOF, which counts as a failure */
    }
    int64_t i = c->req;
    c->served++;
    finish(i, status, overhead[0] ? overhead : NULL);
    if (closing) {
        c->req = -1;
        close_conn(idx);
    } else {
        became_idle(idx);
    }
    return 1;
}

static void on_event(int idx, uint32_t events) {
    Conn *c = &g_conns[idx];
    if (c->state == C_FREE) return;
    if (c->state == C_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            errno = err;
            conn_failed(idx);
            return;
        }
        c->state = C_BUSY;
        try_write(idx);
        return;
    }
    if (events & EPOLLOUT) {
        try_write(idx);
        if (c->state == C_FREE) return;
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) on_readable(idx);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct(int64_t *sorted, int64_t n, double q) {
    if (n == 0) return -1;
    int64_t k = (int64_t)(q * (double)n);
    if (k >= n) k = n - 1;
    return (double)sorted[k] / 1e6;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) die("read body");
    buf[n] = 0;
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *out_path = NULL, *body_path = NULL;
    int port = 0;
    double rate = 100, duration = 1, timeout_s = 30;
    for (int a = 1; a + 1 < argc; a += 2) {
        const char *k = argv[a], *v = argv[a + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--path")) g_path = v;
        else if (!strcmp(k, "--rate")) rate = atof(v);
        else if (!strcmp(k, "--duration")) duration = atof(v);
        else if (!strcmp(k, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(k, "--max-conns")) g_max_conns = atoi(v);
        else if (!strcmp(k, "--body-file")) body_path = v;
        else if (!strcmp(k, "--out")) out_path = v;
        else if (!strcmp(k, "--header")) {
            size_t used = strlen(g_headers);
            snprintf(g_headers + used, sizeof g_headers - used, "%s\r\n", v);
        } else {
            fprintf(stderr, "unknown option %s\n", k);
            return 2;
        }
    }
    if (!port || !body_path || rate <= 0) {
        fprintf(stderr, "usage: loadgen --port N --body-file F [--rate R --duration S --path P --header 'k: v' --out F]\n");
        return 2;
    }
    g_host = host;
    g_body_tpl = read_file(body_path);
    g_addr.sin_family = AF_INET;
    g_addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &g_addr.sin_addr) != 1) {
        fprintf(stderr, "--host must be an IPv4 address\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    g_total = (int64_t)(rate * duration + 0.5);
    g_res = calloc((size_t)g_total, sizeof *g_res);
    g_pending = calloc((size_t)g_total + 1, sizeof *g_pending);
    g_conns = calloc((size_t)g_max_conns, sizeof *g_conns);
    g_idle = calloc((size_t)g_max_conns, sizeof *g_idle);
    for (int k = 0; k < g_max_conns; k++) g_conns[k].fd = -1, g_conns[k].req = -1;

    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g_epfd < 0 || tfd < 0) die("epoll/timerfd");
    int64_t interval_ns = (int64_t)(1e9 / rate);
    int64_t t0 = now_ns() + 20000000; /* 20 ms from now */
    struct itimerspec its = {
        .it_value = {.tv_sec = t0 / 1000000000LL, .tv_nsec = t0 % 1000000000LL},
        .it_interval = {.tv_sec = interval_ns / 1000000000LL, .tv_nsec = interval_ns % 1000000000LL},
    };
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
    struct epoll_event tev = {.events = EPOLLIN, .data.u64 = TIMER_TAG};
    epoll_ctl(g_epfd, EPOLL_CTL_ADD, tfd, &tev);

    struct rusage ru0;
    getrusage(RUSAGE_SELF, &ru0);
    int64_t scheduled = 0;
    int64_t deadline = t0 + (int64_t)(duration * 1e9) + (int64_t)(timeout_s * 1e9);
    struct epoll_event evs[256];
    while (g_done < g_total) {
        int64_t now = now_ns();
        if (now > deadline) break;
        int wait_ms = (int)((deadline - now) / 1000000) + 1;
        int n = epoll_wait(g_epfd, evs, 256, wait_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int e = 0; e < n; e++) {
            if (evs[e].data.u64 == TIMER_TAG) {
                uint64_t ticks;
                if (read(tfd, &ticks, sizeof ticks) != sizeof ticks) continue;
                while (ticks-- > 0 && scheduled < g_total) {
                    g_res[scheduled].due_ns = t0 + scheduled * interval_ns;
                    g_res[scheduled].latency_ns = -1;
                    dispatch(scheduled);
                    scheduled++;
                }
                if (scheduled >= g_total) {
                    struct itimerspec off = {0};
                    timerfd_settime(tfd, 0, &off, NULL);
                }
            } else {
                on_event((int)evs[e].data.u64, evs[e].events);
            }
        }
    }
    struct rusage ru1;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu_user = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) * 1e6 + (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec);
    double cpu_sys = (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) * 1e6 + (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec);

    int64_t ok = 0;
    int64_t *lat = malloc(sizeof(int64_t) * (size_t)(g_total + 1));
    FILE *out = out_path ? fopen(out_path, "w") : NULL;
    for (int64_t i = 0; i < g_total; i++) {
        Result *r = &g_res[i];
        int good = r->latency_ns >= 0 && r->status >= 200 && r->status < 300 && i < scheduled;
        if (good) lat[ok++] = r->latency_ns;
        if (out) {
            fprintf(out, "%lld %lld %d %s\n", (long long)((r->due_ns - t0) / 1000),
                    (long long)(r->latency_ns >= 0 ? r->latency_ns / 1000 : -1), r->latency_ns >= 0 ? r->status : 0,
                    r->overhead[0] ? r->overhead : "-");
        }
    }
    if (out) fclose(out);
    qsort(lat, (size_t)ok, sizeof *lat, cmp_i64);
    printf("{\"sent\": %lld, \"ok\": %lld, \"failures\": %lld, \"retries\": %lld, \"connections\": %lld, "
           "\"p50_ms\": %.3f, \"p90_ms\": %.3f, \"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, "
           "\"cpu_user_us\": %.0f, \"cpu_sys_us\": %.0f, \"cpu_us_per_request\": %.2f}\n",
           (long long)g_total, (long long)ok, (long long)(g_total - ok), (long long)g_retries, (long long)g_connects,
           pct(lat, ok, 0.5), pct(lat, ok, 0.9), pct(lat, ok, 0.99), pct(lat, ok, 0.999), ok ? (double)lat[ok - 1] / 1e6 : -1,
           cpu_user, cpu_sys, g_total ? (cpu_user + cpu_sys) / (double)g_total : 0);
    return 0;
}
