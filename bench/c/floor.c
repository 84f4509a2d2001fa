/* The bench's libzmq baselines in C: how far Python is from libzmq itself.

       floor echo ENDPOINT
           the bare echo: a ROUTER answering each request {"id": I, "cmd": C, ...}
           with {"id": I, "ok": true, "result": C}
       floor floor COMMAND UPDATE SCRIPT
           the I/O floor: a ROUTER and a PUB doing what bench/echo.py's floor does,
           from the templates bench.echo.write_c_script wrote to SCRIPT

   Both print their bound endpoints on stderr as the Python ones do ("echo serving
   on E" / "floor serving on C, updates on U"); SIGTERM ends them. Built by
   bench.c.build at bench time against the libzmq pyzmq uses; never committed built. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if __has_include(<zmq.h>)
#include <zmq.h>
#else
/* pyzmq bundles libzmq without its header: the few stable ABI entries used here. */
typedef struct zmq_msg_t { unsigned char _[64] __attribute__((aligned(sizeof(void *)))); } zmq_msg_t;
#define ZMQ_PUB 1
#define ZMQ_ROUTER 6
#define ZMQ_SNDMORE 2
#define ZMQ_LINGER 17
#define ZMQ_SNDHWM 23
#define ZMQ_LAST_ENDPOINT 32
void *zmq_ctx_new(void);
void *zmq_socket(void *, int);
int zmq_bind(void *, const char *);
int zmq_setsockopt(void *, int, const void *, size_t);
int zmq_getsockopt(void *, int, void *, size_t *);
int zmq_send(void *, const void *, size_t, int);
int zmq_msg_init(zmq_msg_t *);
int zmq_msg_recv(zmq_msg_t *, void *, int);
int zmq_msg_close(zmq_msg_t *);
void *zmq_msg_data(zmq_msg_t *);
size_t zmq_msg_size(const zmq_msg_t *);
int zmq_msg_more(const zmq_msg_t *);
int zmq_errno(void);
const char *zmq_strerror(int);
#endif

#define MAX_FRAMES 16
#define MAX_REPLY 65536

typedef struct { const uint8_t *data; size_t size; } slice;
typedef struct { slice topic, prefix, suffix; } update;
typedef struct { slice cmd, prefix, suffix; uint32_t n_updates; update *updates; } entry;

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, zmq_strerror(zmq_errno()));
    exit(1);
}

/* Skip one msgpack value in [p, end); NULL if it is cut short or malformed. */
static const uint8_t *skip(const uint8_t *p, const uint8_t *end, int depth) {
    if (p >= end || depth > 64) return NULL;
    uint8_t t = *p++;
    uint64_t n = 0, items = 0;
#define NEED(k) do { if ((size_t)(end - p) < (size_t)(k)) return NULL; } while (0)
#define BE(k) do { NEED(k); n = 0; for (int i = 0; i < (k); i++) n = n << 8 | *p++; } while (0)
    if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3) return p;
    if ((t & 0xe0) == 0xa0) n = t & 0x1f;                   /* fixstr */
    else if ((t & 0xf0) == 0x90) items = t & 0x0f;          /* fixarray */
    else if ((t & 0xf0) == 0x80) items = 2 * (t & 0x0f);    /* fixmap */
    else switch (t) {
        case 0xc4: case 0xd9: BE(1); break;                 /* bin8, str8 */
        case 0xc5: case 0xda: BE(2); break;
        case 0xc6: case 0xdb: BE(4); break;
        case 0xc7: BE(1); n += 1; break;                    /* ext8: type byte */
        case 0xc8: BE(2); n += 1; break;
        case 0xc9: BE(4); n += 1; break;
        case 0xca: n = 4; break;
        case 0xcb: n = 8; break;
        case 0xcc: case 0xd0: n = 1; break;
        case 0xcd: case 0xd1: n = 2; break;
        case 0xce: case 0xd2: n = 4; break;
        case 0xcf: case 0xd3: n = 8; break;
        case 0xd4: n = 2; break;                            /* fixext: type + data */
        case 0xd5: n = 3; break;
        case 0xd6: n = 5; break;
        case 0xd7: n = 9; break;
        case 0xd8: n = 17; break;
        case 0xdc: BE(2); items = n; n = 0; break;
        case 0xdd: BE(4); items = n; n = 0; break;
        case 0xde: BE(2); items = 2 * n; n = 0; break;
        case 0xdf: BE(4); items = 2 * n; n = 0; break;
        default: return NULL;
    }
    NEED(n);
    p += n;
    while (items--) {
        p = skip(p, end, depth + 1);
        if (!p) return NULL;
    }
    return p;
#undef BE
#undef NEED
}

/* The id (any value, as its msgpack bytes) and cmd (a fixstr's bytes: every command
   name is shorter than 32 bytes) of a request map; a body that is not a map reads as
   no id (nil) and no cmd. */
static void read_request(const uint8_t *p, size_t size, slice *id, slice *cmd) {
    static const uint8_t nil = 0xc0;
    const uint8_t *end = p + size;
    id->data = &nil; id->size = 1;
    cmd->data = NULL; cmd->size = 0;
    if (!size) return;
    uint64_t pairs;
    if ((*p & 0xf0) == 0x80) pairs = *p++ & 0x0f;
    else if (*p == 0xde && size >= 3) { pairs = (uint64_t)p[1] << 8 | p[2]; p += 3; }
    else return;
    while (pairs--) {
        const uint8_t *key = p, *value = skip(p, end, 0);
        if (!value) return;
        const uint8_t *next = skip(value, end, 0);
        if (!next) return;
        if (value - key == 3 && !memcmp(key, "\xa2id", 3)) {
            id->data = value; id->size = next - value;
        } else if (value - key == 4 && !memcmp(key, "\xa3" "cmd", 4) && (*value & 0xe0) == 0xa0) {
            cmd->data = value + 1; cmd->size = next - value - 1;
        }
        p = next;
    }
}

static size_t put(uint8_t *out, size_t at, const void *data, size_t size) {
    if (at + size > MAX_REPLY) { fputs("reply too large\n", stderr); exit(1); }
    memcpy(out + at, data, size);
    return at + size;
}

static size_t echo_reply(uint8_t *out, slice id, slice cmd) {
    size_t n = put(out, 0, "\x83\xa2id", 4);
    n = put(out, n, id.data, id.size);
    n = put(out, n, "\xa2ok\xc3\xa6result", 11);
    if (!cmd.data) return put(out, n, "\xc0", 1);
    uint8_t header = 0xa0 | (uint8_t)cmd.size;             /* read_request takes fixstr cmds only */
    n = put(out, n, &header, 1);
    return put(out, n, cmd.data, cmd.size);
}

static size_t put_uint(uint8_t *out, size_t at, uint64_t v) {
    uint8_t b[9];
    size_t k;
    if (v < 0x80) { b[0] = (uint8_t)v; k = 1; }
    else if (v <= 0xff) { b[0] = 0xcc; b[1] = (uint8_t)v; k = 2; }
    else if (v <= 0xffff) { b[0] = 0xcd; b[1] = v >> 8; b[2] = (uint8_t)v; k = 3; }
    else if (v <= 0xffffffffu) { b[0] = 0xce; for (int i = 0; i < 4; i++) b[1 + i] = v >> (24 - 8 * i); k = 5; }
    else { b[0] = 0xcf; for (int i = 0; i < 8; i++) b[1 + i] = v >> (56 - 8 * i); k = 9; }
    return put(out, at, b, k);
}

/* hwm: the send high-water mark (the actor's, for its PUB), 0 for libzmq's default. */
static void *bind_socket(void *ctx, int type, const char *endpoint, int hwm, char *bound,
                         size_t size) {
    void *sock = zmq_socket(ctx, type);
    int zero = 0;
    if (!sock || zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero)) die("socket");
    if (hwm && zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm)) die("SNDHWM");
    if (zmq_bind(sock, endpoint)) die(endpoint);
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &size)) die("LAST_ENDPOINT");
    return sock;
}

static const uint8_t *cursor, *script_end;

static uint32_t read_u32(void) {
    if (script_end - cursor < 4) { fputs("script cut short\n", stderr); exit(1); }
    uint32_t v = cursor[0] | cursor[1] << 8 | cursor[2] << 16 | (uint32_t)cursor[3] << 24;
    cursor += 4;
    return v;
}

static slice read_field(void) {
    slice s;
    s.size = read_u32();
    if ((size_t)(script_end - cursor) < s.size) { fputs("script cut short\n", stderr); exit(1); }
    s.data = cursor;
    cursor += s.size;
    return s;
}

static entry *load(const char *path, uint32_t *count, uint64_t *first_seq, int *hwm) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *data = malloc(size);
    if (fread(data, 1, size, f) != (size_t)size) { perror(path); exit(1); }
    fclose(f);
    cursor = data;
    script_end = data + size;
    *first_seq = read_u32();
    *first_seq |= (uint64_t)read_u32() << 32;
    *hwm = (int)read_u32();
    *count = read_u32();
    entry *entries = calloc(*count, sizeof *entries);
    for (uint32_t i = 0; i < *count; i++) {
        entries[i].cmd = read_field();
        entries[i].prefix = read_field();
        entries[i].suffix = read_field();
        entries[i].n_updates = read_u32();
        entries[i].updates = calloc(entries[i].n_updates, sizeof(update));
        for (uint32_t k = 0; k < entries[i].n_updates; k++) {
            entries[i].updates[k].topic = read_field();
            entries[i].updates[k].prefix = read_field();
            entries[i].updates[k].suffix = read_field();
        }
    }
    return entries;
}

int main(int argc, char **argv) {
    int floor = argc == 5 && !strcmp(argv[1], "floor");
    if (!floor && !(argc == 3 && !strcmp(argv[1], "echo"))) {
        fprintf(stderr, "usage: %s echo ENDPOINT | floor COMMAND UPDATE SCRIPT\n", argv[0]);
        return 2;
    }
    uint32_t count = 0;
    uint64_t seq = 0;
    int hwm = 0;
    entry *entries = floor ? load(argv[4], &count, &seq, &hwm) : NULL;
    void *ctx = zmq_ctx_new();
    char bound[256], bound_pub[256];
    void *router = bind_socket(ctx, ZMQ_ROUTER, argv[2], 0, bound, sizeof bound);
    void *pub = NULL;
    if (floor) {
        pub = bind_socket(ctx, ZMQ_PUB, argv[3], hwm, bound_pub, sizeof bound_pub);
        fprintf(stderr, "floor serving on %s, updates on %s\n", bound, bound_pub);
    } else {
        fprintf(stderr, "echo serving on %s\n", bound);
    }
    fflush(stderr);

    static uint8_t out[MAX_REPLY];
    zmq_msg_t frames[MAX_FRAMES];
    for (;;) {
        int n = 0, more;
        do {   /* a request of more frames than MAX_FRAMES keeps only its last ones */
            if (n == MAX_FRAMES) { zmq_msg_close(&frames[--n]); }
            zmq_msg_init(&frames[n]);
            if (zmq_msg_recv(&frames[n], router, 0) < 0) die("recv");
            more = zmq_msg_more(&frames[n]);
            n++;
        } while (more);
        zmq_msg_t *body = &frames[n - 1];
        slice id, cmd;
        read_request(zmq_msg_data(body), zmq_msg_size(body), &id, &cmd);
        entry *found = NULL;
        for (uint32_t i = 0; i < count && cmd.data; i++)
            if (entries[i].cmd.size == cmd.size && !memcmp(entries[i].cmd.data, cmd.data, cmd.size))
                found = &entries[i];
        size_t size;
        if (found) {
            size = put(out, 0, found->prefix.data, found->prefix.size);
            size = put(out, size, id.data, id.size);
            size = put(out, size, found->suffix.data, found->suffix.size);
        } else {
            size = echo_reply(out, id, cmd);
        }
        for (int i = 0; i < n - 1; i++)
            zmq_send(router, zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]), ZMQ_SNDMORE);
        zmq_send(router, out, size, 0);
        for (int i = 0; i < n; i++) zmq_msg_close(&frames[i]);
        for (uint32_t k = 0; found && k < found->n_updates; k++) {
            update *u = &found->updates[k];
            size = put(out, 0, u->prefix.data, u->prefix.size);
            size = put_uint(out, size, seq++);
            size = put(out, size, u->suffix.data, u->suffix.size);
            zmq_send(pub, u->topic.data, u->topic.size, ZMQ_SNDMORE);
            zmq_send(pub, out, size, 0);
        }
    }
}
