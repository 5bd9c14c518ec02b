/* wsload: the WebSocket load client of bench/scale.py, in C so the load generator costs the
 * shared two cores as little as possible (as wrk does for HTTP).
 *
 *   wsload --port P --conns N --size S --src-ips K --ip-offset O --inflight I --timeout T
 *
 * scale.py compiles it with the system C compiler (gcc -O2) and drives it over stdin/stdout,
 * one command per line:
 *
 *   warm N   open N connections, echo one message on each, close them    -> "WARMED ok failed secs {errors}"
 *   open     open --conns connections and hold them ("PROG ok failed")    -> "OPEN ok failed secs {errors}"
 *   rate R   send R messages/s in all, round-robin over the open connections
 *   mark     start the measuring window                                  -> "MARKED"
 *   report   stop sending; figures of the window                         -> "RESULT {json}"
 *   quit     exit (so does end of stdin)
 *
 * Each connection: a non-blocking TCP connect from 127.0.0.x (round-robin over --src-ips
 * addresses starting at 127.0.0.2 + --ip-offset, so ephemeral ports never run out), a fixed
 * HTTP upgrade request, a check of the 101 and its Sec-WebSocket-Accept, then masked binary
 * frames of --size bytes. The first 8 payload bytes of each frame carry its send time
 * (CLOCK_MONOTONIC ns), so the echo gives the round trip without per-connection queues. At
 * most --inflight connects/handshakes are pending; one that takes longer than --timeout
 * seconds fails. Server frames are parsed in full (any length, split anywhere); a frame that is
 * not a --size binary echo counts as bad, a close frame closes the connection.
 *
 * The latency histogram has buckets of 2 %: bucket b holds round trips in
 * [1.02^b, 1.02^(b+1)) microseconds, the same as scale.py's percentile function expects.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define WS_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" /* RFC 6455 section 1.3's example pair */
#define WS_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define HS_MAX 2048
#define HIST_N 1400 /* 1.02^1400 us is far beyond any round trip */
#define MAX_ERRORS 16
#define STDIN_TAG UINT32_MAX

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

enum { ST_FREE, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN, ST_CLOSED };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t op;
    uint8_t hdr_len;
    uint8_t hdr[14];
    uint8_t ts[8];
    uint16_t hs_len;
    char *hs;        /* response head while in ST_HANDSHAKE */
    uint64_t skip;   /* payload bytes of the current frame still to come */
    uint64_t plen;   /* payload length of the current frame */
    uint64_t got;    /* payload bytes of the current frame seen so far */
    char *out;       /* bytes the kernel refused, sent on EPOLLOUT */
    uint32_t out_len, out_cap;
    double deadline; /* connect + handshake deadline */
} conn_t;

typedef struct {
    char msg[80];
    long n;
} error_count_t;

/* settings */
static int port, n_conns, size, src_ips, ip_offset, inflight_max;
static double timeout_s;

/* state */
static int ep;
static conn_t *conns;
static int cap;
static uint8_t *frame; /* template of one masked frame; its timestamp is rewritten per send */
static size_t frame_len, payload_off;
static char request[512];
static size_t request_len;
static uint8_t rbuf[256 * 1024];
static double tick_s = 0.005; /* steady phase: send the messages due once per tick */


/* opening */
static int warm, opening, target, started, ok_n, failed_n, inflight;
static double open_t0, last_scan;
static error_count_t errors[MAX_ERRORS];
static int n_errors;

/* steady phase */
static double rate, t0;
static long sent_total, behind, w_behind, dropped, bad, w_echoed;
static int rr, marked;
static double w_t, w_cpu;
static long hist[HIST_N];
static double hist_k; /* 1 / log(1.02) */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what) {
    fprintf(stderr, "wsload: %s: %s\n", what, strerror(errno));
    exit(2);
}

static void note_error(const char *what, int err) {
    char msg[80];
    snprintf(msg, sizeof msg, "%s: %s", what, err ? strerror(err) : "closed");
    for (int i = 0; i < n_errors; i++)
        if (!strcmp(errors[i].msg, msg)) {
            errors[i].n++;
            return;
        }
    if (n_errors < MAX_ERRORS) {
        strcpy(errors[n_errors].msg, msg);
        errors[n_errors++].n = 1;
    }
}

static void print_errors(void) {
    printf("{");
    for (int i = 0; i < n_errors; i++) {
        printf("%s\"", i ? ", " : "");
        for (const char *p = errors[i].msg; *p; p++)
            if (*p != '"' && *p != '\\') putchar(*p);
        printf("\": %ld", errors[i].n);
    }
    printf("}");
    n_errors = 0;
}

static void release(conn_t *c) {
    if (c->fd >= 0) close(c->fd); /* also removes it from the epoll set */
    c->fd = -1;
    free(c->hs);
    c->hs = NULL;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_cap = 0;
    c->state = ST_CLOSED;
}

static void launch(void);

/* One connection attempt finished: established (and, when warming, echoed) or failed. */
static void settle(int ok) {
    inflight--;
    if (ok)
        ok_n++;
    else
        failed_n++;
    int done = ok_n + failed_n;
    if (done == target) {
        opening = 0;
        printf("%s %d %d %.3f ", warm ? "WARMED" : "OPEN", ok_n, failed_n, now_s() - open_t0);
        print_errors();
        printf("\n");
        fflush(stdout);
    } else {
        if (!warm && done % 2000 == 0) {
            printf("PROG %d %d\n", ok_n, failed_n);
            fflush(stdout);
        }
        launch();
    }
}

static void fail(conn_t *c, const char *what, int err) {
    note_error(what, err);
    release(c);
    settle(0);
}

static void set_events(conn_t *c, int idx, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)idx};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl MOD");
}

/* Write ``p[0:n]`` now if the kernel takes it, keeping the rest for EPOLLOUT. */
static int send_bytes(conn_t *c, int idx, const void *p, size_t n) {
    if (c->out_len == 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno != EAGAIN) return -1;
            w = 0;
        }
        if ((size_t)w == n) return 0;
        p = (const uint8_t *)p + w;
        n -= (size_t)w;
        set_events(c, idx, EPOLLIN | EPOLLOUT);
    }
    if (c->out_len + n > c->out_cap) {
        c->out_cap = (uint32_t)((c->out_len + n) * 2);
        c->out = realloc(c->out, c->out_cap);
        if (!c->out) die("realloc");
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += (uint32_t)n;
    return 0;
}

static void flush_out(conn_t *c, int idx) {
    ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (w < 0) {
        if (errno == EAGAIN) return;
        if (c->state == ST_HANDSHAKE || warm)
            fail(c, c->state == ST_HANDSHAKE ? "handshake: send" : "warm-up send", errno);
        else {
            dropped++;
            release(c);
        }
        return;
    }
    memmove(c->out, c->out + w, c->out_len - (size_t)w);
    c->out_len -= (uint32_t)w;
    if (!c->out_len) set_events(c, idx, EPOLLIN);
}

static void send_message(conn_t *c, int idx) {
    uint64_t ts = now_ns();
    for (int i = 0; i < 8; i++) /* payload_off is a multiple of 4 from the mask's start */
        frame[payload_off + i] = (uint8_t)(ts >> (8 * i)) ^ MASK[i & 3];
    if (send_bytes(c, idx, frame, frame_len) < 0) {
        if (!warm) dropped++;
        release(c);
    }
}

static void launch(void) {
    while (inflight < inflight_max && started < target) {
        int idx = started++;
        conn_t *c = &conns[idx];
        memset(c, 0, sizeof *c);
        c->fd = -1;
        inflight++;
        c->deadline = now_s() + timeout_s;
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            fail(c, "socket", errno);
            continue;
        }
        c->fd = fd;
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)(2 + (ip_offset + idx) % src_ips));
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            fail(c, "bind", errno);
            continue;
        }
        struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        dst.sin_addr.s_addr = htonl(0x7f000001u);
        c->state = ST_CONNECTING;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)idx};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl ADD");
        if (connect(fd, (struct sockaddr *)&dst, sizeof dst) < 0 && errno != EINPROGRESS) {
            fail(c, "connect", errno);
            continue;
        }
    }
}

static void start_open(int n, int is_warm) {
    if (n > cap) {
        conns = realloc(conns, sizeof(conn_t) * (size_t)n);
        if (!conns) die("realloc");
        cap = n;
    }
    warm = is_warm;
    opening = 1;
    target = n;
    started = ok_n = failed_n = inflight = 0;
    open_t0 = last_scan = now_s();
    if (n == 0) {
        inflight = 1;
        target = 0;
        settle(1); /* prints at once */
        return;
    }
    launch();
}

static void scan_timeouts(double now) {
    for (int i = 0; i < started; i++) {
        conn_t *c = &conns[i];
        int pending = c->state == ST_CONNECTING || c->state == ST_HANDSHAKE ||
                      (warm && c->state == ST_OPEN); /* a warm-up connection awaits its echo */
        if (pending && now > c->deadline)
            fail(c,
                 c->state == ST_CONNECTING   ? "connect"
                 : c->state == ST_HANDSHAKE ? "handshake"
                                            : "warm-up echo",
                 ETIMEDOUT);
    }
}

static void frame_done(conn_t *c, int idx) {
    if (c->op != 2) {
        if (c->op == 8 && warm) {
            fail(c, "warm-up echo: close frame", 0);
        } else if (c->op == 8) {
            dropped++;
            release(c);
        } else {
            bad++;
        }
        return;
    }
    if (c->plen != (uint64_t)size) bad++;
    if (warm) { /* the warm-up connection did its echo */
        release(c);
        settle(1);
        return;
    }
    if (marked && c->plen >= 8) {
        uint64_t sent = 0;
        for (int i = 0; i < 8; i++) sent |= (uint64_t)c->ts[i] << (8 * i);
        double us = (double)(now_ns() - sent) / 1000.0;
        int b = (int)(log(us > 1.0 ? us : 1.0) * hist_k);
        hist[b < HIST_N ? b : HIST_N - 1]++;
        w_echoed++;
    }
    (void)idx;
}

/* Parse server frames (unmasked; any split) out of ``p[0:n]``. */
static void on_frames(conn_t *c, int idx, const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n && c->state == ST_OPEN) {
        if (c->skip) {
            size_t take = c->skip < n - i ? (size_t)c->skip : n - i;
            if (c->got < 8) {
                size_t k = 8 - (size_t)c->got < take ? 8 - (size_t)c->got : take;
                memcpy(c->ts + c->got, p + i, k);
            }
            c->got += take;
            c->skip -= take;
            i += take;
            if (!c->skip) frame_done(c, idx);
            continue;
        }
        c->hdr[c->hdr_len++] = p[i++];
        if (c->hdr_len < 2) continue;
        uint8_t ln = c->hdr[1] & 0x7f;
        unsigned need = 2u + (ln == 126 ? 2u : ln == 127 ? 8u : 0u) + (c->hdr[1] & 0x80 ? 4u : 0u);
        if (c->hdr_len < need) continue;
        uint64_t plen = ln;
        if (ln == 126)
            plen = ((uint64_t)c->hdr[2] << 8) | c->hdr[3];
        else if (ln == 127)
            for (int k = 2; k < 10; k++) plen = (plen << 8) | c->hdr[k];
        if (c->hdr[1] & 0x80) bad++; /* a server must not mask */
        c->op = c->hdr[0] & 0x0f;
        c->plen = c->skip = plen;
        c->got = 0;
        c->hdr_len = 0;
        if (!plen) frame_done(c, idx);
    }
}

static void on_handshake(conn_t *c, int idx, const uint8_t *p, size_t n) {
    size_t room = HS_MAX - c->hs_len;
    size_t take = n < room ? n : room;
    memcpy(c->hs + c->hs_len, p, take);
    c->hs_len += (uint16_t)take;
    char *end = memmem(c->hs, c->hs_len, "\r\n\r\n", 4);
    if (!end) {
        if (c->hs_len == HS_MAX) fail(c, "handshake: response head too long", 0);
        return;
    }
    size_t head = (size_t)(end - c->hs);
    if (c->hs_len < 12 || memcmp(c->hs, "HTTP/1.1 101", 12) ||
        !memmem(c->hs, head, WS_ACCEPT, sizeof WS_ACCEPT - 1)) {
        fail(c, "handshake: not a 101 with the right accept", 0);
        return;
    }
    /* bytes after the head in this read (the head is at most HS_MAX, so they are in p) */
    size_t used = head + 4 - (c->hs_len - take);
    free(c->hs);
    c->hs = NULL;
    c->state = ST_OPEN;
    if (warm) { /* settled once the echo is back */
        send_message(c, idx);
        if (c->state == ST_CLOSED) {
            note_error("warm-up send", errno);
            settle(0);
            return;
        }
    } else {
        settle(1);
    }
    if (c->state == ST_OPEN && used < n) on_frames(c, idx, p + used, n - used);
}

static void on_event(int idx, uint32_t events) {
    conn_t *c = &conns[idx];
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            fail(c, "connect", err);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN))) return;
        c->state = ST_HANDSHAKE;
        c->hs = malloc(HS_MAX);
        if (!c->hs) die("malloc");
        set_events(c, idx, EPOLLIN);
        if (send_bytes(c, idx, request, request_len) < 0) {
            fail(c, "handshake: send", errno);
            return;
        }
        return;
    }
    if ((events & EPOLLOUT) && c->out_len) {
        flush_out(c, idx);
        if (c->state == ST_CLOSED) return;
    }
    if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP))) return;
    ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
    if (r > 0) {
        if (c->state == ST_HANDSHAKE)
            on_handshake(c, idx, rbuf, (size_t)r);
        else
            on_frames(c, idx, rbuf, (size_t)r);
        return;
    }
    if (r < 0 && errno == EAGAIN) return;
    int err = r < 0 ? errno : 0;
    if (c->state == ST_HANDSHAKE) {
        fail(c, "handshake", err);
    } else if (c->state == ST_OPEN) {
        if (warm) {
            fail(c, "warm-up echo", err);
        } else {
            dropped++;
            release(c);
        }
    }
}

/* Send the messages due by now, round-robin; more than 50 ms late (starved of CPU) skips them
 * (counted in "behind") rather than bursting. */
static void tick(void) {
    double now = now_s();
    long due = (long)((now - t0) * rate) - sent_total;
    long cap_due = (long)(rate * 0.05);
    if (cap_due < 1) cap_due = 1;
    if (due > cap_due) {
        behind += due - cap_due;
        if (marked) w_behind += due - cap_due;
        sent_total += due - cap_due;
        due = cap_due;
    }
    int n = started, misses = 0, i = rr;
    while (due > 0 && misses < n) {
        conn_t *c = &conns[i];
        int idx = i;
        i = i + 1 < n ? i + 1 : 0;
        if (c->state != ST_OPEN) {
            misses++;
            continue;
        }
        misses = 0;
        send_message(c, idx);
        due--;
        sent_total++;
    }
    rr = i;
}

static void command(char *line) {
    char *arg = strchr(line, ' ');
    if (arg) *arg++ = 0;
    if (!strcmp(line, "warm")) {
        start_open(atoi(arg ? arg : "0"), 1);
    } else if (!strcmp(line, "open")) {
        start_open(n_conns, 0);
    } else if (!strcmp(line, "rate")) {
        rate = atof(arg ? arg : "0");
        t0 = now_s();
        sent_total = 0;
    } else if (!strcmp(line, "mark")) {
        marked = 1;
        w_echoed = w_behind = 0;
        memset(hist, 0, sizeof hist);
        w_t = now_s();
        w_cpu = cpu_s();
        printf("MARKED\n");
        fflush(stdout);
    } else if (!strcmp(line, "report")) {
        double dt = now_s() - w_t;
        double cpu = cpu_s() - w_cpu;
        rate = 0;
        marked = 0;
        printf("RESULT {\"echoed\": %ld, \"seconds\": %.6f, \"cpu_pct\": %.3f, \"behind\": %ld, "
               "\"dropped\": %ld, \"bad\": %ld, \"hist\": {",
               w_echoed, dt, cpu / dt * 100.0, w_behind, dropped, bad);
        int first = 1;
        for (int b = 0; b < HIST_N; b++)
            if (hist[b]) {
                printf("%s\"%d\": %ld", first ? "" : ", ", b, hist[b]);
                first = 0;
            }
        printf("}}\n");
        fflush(stdout);
    } else if (!strcmp(line, "quit")) {
        exit(0);
    } else {
        fprintf(stderr, "wsload: unknown command %s\n", line);
    }
}

static void on_stdin(void) {
    static char buf[4096];
    static size_t len;
    ssize_t r = read(0, buf + len, sizeof buf - 1 - len);
    if (r <= 0) exit(0); /* the bench is gone */
    len += (size_t)r;
    char *start = buf, *nl;
    while ((nl = memchr(start, '\n', len - (size_t)(start - buf)))) {
        *nl = 0;
        command(start);
        start = nl + 1;
    }
    len -= (size_t)(start - buf);
    memmove(buf, start, len);
}

static void usage(void) {
    fprintf(stderr, "usage: wsload --port P --conns N --size S --src-ips K --ip-offset O "
                    "--inflight I --timeout T\n");
    exit(2);
}

int main(int argc, char **argv) {
    size = 1024;
    src_ips = 1;
    inflight_max = 100;
    timeout_s = 15.0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        const char *k = argv[i], *v = argv[++i];
        if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--conns")) n_conns = atoi(v);
        else if (!strcmp(k, "--size")) size = atoi(v);
        else if (!strcmp(k, "--src-ips")) src_ips = atoi(v);
        else if (!strcmp(k, "--ip-offset")) ip_offset = atoi(v);
        else if (!strcmp(k, "--inflight")) inflight_max = atoi(v);
        else if (!strcmp(k, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(k, "--tick-ms")) tick_s = atof(v) / 1000.0;
        else usage();
    }
    if (!port || size < 8 || src_ips < 1 || src_ips > 250 || inflight_max < 1) usage();

    hist_k = 1.0 / log(1.02);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* the frame template: FIN + binary, mask bit, length, mask, masked payload */
    size_t hlen = size < 126 ? 2 : size < 65536 ? 4 : 10;
    frame_len = hlen + 4 + (size_t)size;
    frame = malloc(frame_len);
    if (!frame) die("malloc");
    frame[0] = 0x82;
    if (size < 126) {
        frame[1] = 0x80 | (uint8_t)size;
    } else if (size < 65536) {
        frame[1] = 0x80 | 126;
        frame[2] = (uint8_t)(size >> 8);
        frame[3] = (uint8_t)size;
    } else {
        frame[1] = 0x80 | 127;
        for (int k = 0; k < 8; k++) frame[2 + k] = (uint8_t)((uint64_t)size >> (56 - 8 * k));
    }
    memcpy(frame + hlen, MASK, 4);
    payload_off = hlen + 4;
    for (int i = 0; i < size; i++) frame[payload_off + i] = (uint8_t)(i & 0xff) ^ MASK[i & 3];
    request_len = (size_t)snprintf(request, sizeof request,
                                   "GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                                   "Connection: Upgrade\r\nSec-WebSocket-Key: " WS_KEY
                                   "\r\nSec-WebSocket-Version: 13\r\n\r\n",
                                   port);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event sev = {.events = EPOLLIN, .data.u32 = STDIN_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &sev) < 0) die("epoll_ctl stdin");
    printf("READY\n");
    fflush(stdout);

    static struct epoll_event evs[1024];
    double next_tick = 0;
    for (;;) {
        int wait_ms = opening ? 100 : -1;
        if (rate > 0) {
            double left = next_tick - now_s();
            wait_ms = left > 0 ? (int)(left * 1000.0) + 1 : 0;
        }
        int n = epoll_wait(ep, evs, 1024, wait_ms);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u32 == STDIN_TAG)
                on_stdin();
            else
                on_event((int)evs[i].data.u32, evs[i].events);
        }
        if (rate > 0 && now_s() >= next_tick) {
            tick();
            next_tick = now_s() + tick_s;
        }
        if (opening) {
            double now = now_s();
            if (now - last_scan > 0.1) {
                last_scan = now;
                scan_timeouts(now);
            }
        }
    }
}
