/* protobuf — schema-driven protocol buffers codec (see protobuf.h for the contract). */
#include "protobuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *nh_pb_strerror(int err) {
    switch (err) {
    case NH_EPB_TRUNCATED:
        return "truncated (a value or length runs past the end)";
    case NH_EPB_VARINT:
        return "malformed varint";
    case NH_EPB_WIRE_TYPE:
        return "wrong wire type";
    case NH_EPB_FIELD_NUM:
        return "bad field number";
    case NH_EPB_DEPTH:
        return "nested too deep";
    case NH_EPB_GROUP:
        return "unbalanced group";
    case NH_EPB_NOMEM:
        return "out of memory";
    case NH_EPB_SCHEMA:
        return "bad schema";
    case NH_EPB_RANGE:
        return "value out of range";
    case NH_EPB_VISITOR:
        return "stopped by the visitor";
    default:
        return "unknown protobuf error";
    }
}

/* ---- wire reading ---- */

typedef struct reader {
    const uint8_t *p, *end;
} reader_t;

static int read_varint(reader_t *r, uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p == r->end) return NH_EPB_TRUNCATED;
        uint8_t byte = *r->p++;
        /* the 10th byte holds bit 63 only */
        if (i == 9 && byte > 1) return NH_EPB_VARINT;
        v |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (!(byte & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return NH_EPB_VARINT;
}

static int read_fixed(reader_t *r, int nbytes, uint64_t *out) {
    if (r->end - r->p < nbytes) return NH_EPB_TRUNCATED;
    uint64_t v = 0;
    for (int i = nbytes - 1; i >= 0; i--)
        v = (v << 8) | r->p[i];
    r->p += nbytes;
    *out = v;
    return 0;
}

static int read_len(reader_t *r, const uint8_t **p, size_t *len) {
    uint64_t n;
    int e = read_varint(r, &n);
    if (e) return e;
    if (n > (uint64_t)(r->end - r->p)) return NH_EPB_TRUNCATED;
    *p = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

static int read_tag(reader_t *r, uint32_t *number, int *wire) {
    uint64_t t;
    int e = read_varint(r, &t);
    if (e) return e;
    if (t > 0xFFFFFFFFu || (t >> 3) == 0) return NH_EPB_FIELD_NUM;
    *number = (uint32_t)(t >> 3);
    *wire = (int)(t & 7);
    return 0;
}

/* Skips one value of an unknown field; groups (wire 3 .. 4) are skipped whole, nested at most
 * up to the depth limit. */
static int skip_value(reader_t *r, uint32_t number, int wire, int depth) {
    uint64_t v;
    const uint8_t *p;
    size_t len;
    switch (wire) {
    case NH_PB_VARINT:
        return read_varint(r, &v);
    case NH_PB_I64:
        return read_fixed(r, 8, &v);
    case NH_PB_I32:
        return read_fixed(r, 4, &v);
    case NH_PB_LEN:
        return read_len(r, &p, &len);
    case 3: {
        if (depth >= NH_PB_MAX_DEPTH) return NH_EPB_DEPTH;
        for (;;) {
            uint32_t n;
            int w, e = read_tag(r, &n, &w);
            if (e) return e;
            if (w == 4) return n == number ? 0 : NH_EPB_GROUP;
            e = skip_value(r, n, w, depth + 1);
            if (e) return e;
        }
    }
    case 4:
        return NH_EPB_GROUP;
    default:
        return NH_EPB_WIRE_TYPE;
    }
}

int nh_pb_wire_of(int type) {
    switch (type) {
    case NH_PB_DOUBLE:
    case NH_PB_FIXED64:
    case NH_PB_SFIXED64:
        return NH_PB_I64;
    case NH_PB_FLOAT:
    case NH_PB_FIXED32:
    case NH_PB_SFIXED32:
        return NH_PB_I32;
    case NH_PB_STRING:
    case NH_PB_BYTES:
    case NH_PB_MESSAGE:
        return NH_PB_LEN;
    default:
        return NH_PB_VARINT;
    }
}

int nh_pb_packable(int type) {
    return nh_pb_wire_of(type) != NH_PB_LEN && type != NH_PB_GROUP;
}

static uint64_t zigzag(int64_t v) {
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static int64_t unzigzag(uint64_t v) {
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* The raw wire value of a numeric field as its type says. */
static nh_pb_scalar_t scalar_of(int type, uint64_t raw) {
    nh_pb_scalar_t s;
    switch (type) {
    case NH_PB_DOUBLE:
        memcpy(&s.d, &raw, 8);
        break;
    case NH_PB_FLOAT: {
        uint32_t u = (uint32_t)raw;
        float f;
        memcpy(&f, &u, 4);
        s.d = f;
        break;
    }
    case NH_PB_INT64:
    case NH_PB_SFIXED64:
        s.i = (int64_t)raw;
        break;
    /* int32 and enum are sign-extended to 64 bits on the wire; the low 32 bits are the value */
    case NH_PB_INT32:
    case NH_PB_ENUM:
        s.i = (int32_t)(uint32_t)raw;
        break;
    case NH_PB_SFIXED32:
        s.i = (int32_t)(uint32_t)raw;
        break;
    case NH_PB_UINT32:
    case NH_PB_FIXED32:
        s.u = (uint32_t)raw;
        break;
    case NH_PB_UINT64:
    case NH_PB_FIXED64:
        s.u = raw;
        break;
    case NH_PB_BOOL:
        s.b = raw != 0;
        break;
    case NH_PB_SINT32:
        s.i = (int32_t)unzigzag((uint32_t)raw);
        break;
    case NH_PB_SINT64:
        s.i = unzigzag(raw);
        break;
    default:
        s.u = raw;
        break;
    }
    return s;
}

static int read_scalar(reader_t *r, int type, uint64_t *raw) {
    switch (nh_pb_wire_of(type)) {
    case NH_PB_I64:
        return read_fixed(r, 8, raw);
    case NH_PB_I32:
        return read_fixed(r, 4, raw);
    default:
        return read_varint(r, raw);
    }
}

static int decode_message(const nh_pb_message_t *m, reader_t *r, const nh_pb_visitor_t *v, void *ud,
                          int depth);

static int decode_field(const nh_pb_field_t *f, int wire, reader_t *r, const nh_pb_visitor_t *v,
                        void *ud, int depth) {
    int want = nh_pb_wire_of(f->type), e;
    if (f->any_wire) wire = want; /* as pomelo-protobuf's own decoders do */
    if (f->count_prefixed && f->repeated && wire == want && want != NH_PB_LEN) {
        uint64_t count, raw;
        if ((e = read_varint(r, &count))) return e;
        /* every element takes a byte at least: a count past the end fails before any loop */
        if (count > (uint64_t)(r->end - r->p)) return NH_EPB_TRUNCATED;
        for (uint64_t i = 0; i < count; i++) {
            if ((e = read_scalar(r, f->type, &raw))) return e;
            if (v->scalar(ud, f, scalar_of(f->type, raw))) return NH_EPB_VISITOR;
        }
        return 0;
    }
    if (wire == NH_PB_LEN && want != NH_PB_LEN && f->repeated) {
        /* a packed run: accepted for every repeated scalar, packed declared or not */
        const uint8_t *p;
        size_t len;
        if ((e = read_len(r, &p, &len))) return e;
        reader_t sub = {p, p + len};
        while (sub.p < sub.end) {
            uint64_t raw;
            if ((e = read_scalar(&sub, f->type, &raw))) return e;
            if (v->scalar(ud, f, scalar_of(f->type, raw))) return NH_EPB_VISITOR;
        }
        return 0;
    }
    if (wire != want) return NH_EPB_WIRE_TYPE;
    if (want != NH_PB_LEN) {
        uint64_t raw;
        if ((e = read_scalar(r, f->type, &raw))) return e;
        return v->scalar(ud, f, scalar_of(f->type, raw)) ? NH_EPB_VISITOR : 0;
    }
    const uint8_t *p;
    size_t len;
    if ((e = read_len(r, &p, &len))) return e;
    if (f->type != NH_PB_MESSAGE) return v->bytes(ud, f, p, len) ? NH_EPB_VISITOR : 0;
    if (depth >= NH_PB_MAX_DEPTH) return NH_EPB_DEPTH;
    if (v->begin_message(ud, f)) return NH_EPB_VISITOR;
    reader_t sub = {p, p + len};
    if ((e = decode_message(f->message, &sub, v, ud, depth + 1))) return e;
    return v->end_message(ud, f) ? NH_EPB_VISITOR : 0;
}

static int decode_message(const nh_pb_message_t *m, reader_t *r, const nh_pb_visitor_t *v, void *ud,
                          int depth) {
    while (r->p < r->end) {
        uint32_t number;
        int wire, e;
        if ((e = read_tag(r, &number, &wire))) return e;
        if (wire == 6 || wire == 7) return NH_EPB_WIRE_TYPE;
        const nh_pb_field_t *f = nh_pb_field_by_number(m, number);
        e = f ? decode_field(f, wire, r, v, ud, depth) : skip_value(r, number, wire, depth);
        if (e) return e;
    }
    return 0;
}

int nh_pb_decode(const nh_pb_message_t *m, const uint8_t *data, size_t len,
                 const nh_pb_visitor_t *v, void *ud) {
    reader_t r = {data, data + len};
    return decode_message(m, &r, v, ud, 0);
}

/* ---- writing ---- */

void nh_pb_buf_free(nh_pb_buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int reserve(nh_pb_buf_t *b, size_t more) {
    if (b->failed) return 0;
    if (b->cap - b->len >= more) return 1;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < more) {
        if (cap > SIZE_MAX / 2) {
            b->failed = 1;
            return 0;
        }
        cap *= 2;
    }
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->failed = 1;
        return 0;
    }
    b->data = d;
    b->cap = cap;
    return 1;
}

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Returns the bytes written. */
static size_t write_varint_at(uint8_t *p, uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
        n++;
    }
    *p = (uint8_t)v;
    return n;
}

void nh_pb_put_varint(nh_pb_buf_t *b, uint64_t v) {
    if (v < 0x80 && b->len < b->cap && !b->failed) { /* most tags and lengths: one byte */
        b->data[b->len++] = (uint8_t)v;
        return;
    }
    if (!reserve(b, 10)) return;
    b->len += write_varint_at(b->data + b->len, v);
}

void nh_pb_put_tag(nh_pb_buf_t *b, uint32_t number, int wire) {
    nh_pb_put_varint(b, ((uint64_t)number << 3) | (uint64_t)wire);
}

static void put_fixed(nh_pb_buf_t *b, uint64_t v, int nbytes) {
    if (!reserve(b, (size_t)nbytes)) return;
    for (int i = 0; i < nbytes; i++)
        b->data[b->len++] = (uint8_t)(v >> (8 * i));
}

void nh_pb_put_bytes(nh_pb_buf_t *b, const void *p, size_t len) {
    nh_pb_put_varint(b, len);
    if (!len || !reserve(b, len)) return;
    memcpy(b->data + b->len, p, len);
    b->len += len;
}

/* One byte is reserved for the length, enough below 128 bytes (most submessages); a longer
 * section is moved up by the extra length bytes at its end. */
size_t nh_pb_begin_len(nh_pb_buf_t *b) {
    if (!reserve(b, 1)) return 0;
    return b->len++;
}

void nh_pb_end_len(nh_pb_buf_t *b, size_t mark) {
    if (b->failed) return;
    size_t body = b->len - mark - 1, n = varint_size(body);
    if (n > 1) {
        if (!reserve(b, n - 1)) return;
        memmove(b->data + mark + n, b->data + mark + 1, body);
        b->len += n - 1;
    }
    write_varint_at(b->data + mark, body);
}

void nh_pb_put_scalar(nh_pb_buf_t *b, int type, nh_pb_scalar_t v) {
    switch (type) {
    case NH_PB_DOUBLE: {
        uint64_t u;
        memcpy(&u, &v.d, 8);
        put_fixed(b, u, 8);
        break;
    }
    case NH_PB_FLOAT: {
        float f = (float)v.d;
        uint32_t u;
        memcpy(&u, &f, 4);
        put_fixed(b, u, 4);
        break;
    }
    case NH_PB_FIXED64:
    case NH_PB_SFIXED64:
        put_fixed(b, v.u, 8);
        break;
    case NH_PB_FIXED32:
    case NH_PB_SFIXED32:
        put_fixed(b, v.u & 0xFFFFFFFFu, 4);
        break;
    case NH_PB_SINT32:
    case NH_PB_SINT64:
        nh_pb_put_varint(b, zigzag(v.i));
        break;
    case NH_PB_BOOL:
        nh_pb_put_varint(b, v.b ? 1 : 0);
        break;
    /* int32/enum negatives are written as 10-byte sign-extended varints, as protobuf does */
    case NH_PB_INT32:
    case NH_PB_ENUM:
    case NH_PB_INT64:
        nh_pb_put_varint(b, (uint64_t)v.i);
        break;
    default:
        nh_pb_put_varint(b, v.u);
        break;
    }
}

int nh_pb_parse_int64(const char *s, size_t len, int is_unsigned, nh_pb_scalar_t *out) {
    size_t i = 0;
    int neg = 0;
    if (len && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == len || len - i > 20) return NH_EPB_RANGE;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return NH_EPB_RANGE;
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return NH_EPB_RANGE;
        v = v * 10 + d;
    }
    if (is_unsigned) {
        if (neg && v) return NH_EPB_RANGE;
        out->u = v;
        return 0;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) return NH_EPB_RANGE;
        out->i = (int64_t)(0 - v);
    } else {
        if (v > (uint64_t)INT64_MAX) return NH_EPB_RANGE;
        out->i = (int64_t)v;
    }
    return 0;
}

/* ---- schema ---- */

/* A field while loading: its type name is resolved once every type is known. */
typedef struct raw_field {
    char *type_name;
    int32_t oneof_index; /* -1 none */
    int proto3_optional;
    int has_packed, packed, label;
} raw_field_t;

typedef struct load_msg {
    nh_pb_message_t m;
    raw_field_t *raw; /* parallel to m.fields until resolved */
    size_t cap;
    int proto3;
} load_msg_t;

struct nh_pb_schema {
    int pomelo; /* the pomelo-protobuf flavour (set by finish) */
    load_msg_t *msgs;
    size_t nmsgs, cap_msgs;
    nh_pb_enum_t *enums;
    size_t nenums, cap_enums;
};

typedef struct loader {
    nh_pb_schema_t *s;
    char *err;
    size_t errlen;
} loader_t;

static int fail(loader_t *ld, int code, const char *fmt, ...) {
    if (ld->err && ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static char *dup_n(const uint8_t *p, size_t len) {
    char *s = malloc(len + 1);
    if (!s) return NULL;
    memcpy(s, p, len);
    s[len] = 0;
    return s;
}

static char *join_name(const char *scope, const uint8_t *name, size_t len) {
    size_t sl = scope ? strlen(scope) : 0;
    char *s = malloc(sl + 1 + len + 1);
    if (!s) return NULL;
    size_t o = 0;
    if (sl) {
        memcpy(s, scope, sl);
        s[sl] = '.';
        o = sl + 1;
    }
    memcpy(s + o, name, len);
    s[o + len] = 0;
    return s;
}

static int grow(void **arr, size_t *cap, size_t n, size_t size) {
    if (n < *cap) return 1;
    size_t nc = *cap ? *cap * 2 : 8;
    void *a = realloc(*arr, nc * size);
    if (!a) return 0;
    memset((char *)a + *cap * size, 0, (nc - *cap) * size);
    *arr = a;
    *cap = nc;
    return 1;
}

/* Iterates the fields of an embedded descriptor message: each call gives the next field's number,
 * wire type and value (varint in *u, length-delimited in p/len); returns 1, 0 at the end, or an
 * error. */
static int next_field(reader_t *r, uint32_t *num, uint64_t *u, const uint8_t **p, size_t *len) {
    if (r->p >= r->end) return 0;
    int wire, e;
    if ((e = read_tag(r, num, &wire))) return e;
    *p = NULL;
    *len = 0;
    switch (wire) {
    case NH_PB_VARINT:
        e = read_varint(r, u);
        break;
    case NH_PB_LEN:
        e = read_len(r, p, len);
        break;
    default:
        e = skip_value(r, *num, wire, 0);
        *num = 0;
        break;
    }
    return e ? e : 1;
}

static int load_enum(loader_t *ld, const char *scope, const uint8_t *data, size_t dlen) {
    nh_pb_schema_t *s = ld->s;
    if (!grow((void **)&s->enums, &s->cap_enums, s->nenums, sizeof *s->enums)) return NH_EPB_NOMEM;
    nh_pb_enum_t *en = &s->enums[s->nenums++];
    size_t cap = 0;
    reader_t r = {data, data + dlen};
    uint32_t num;
    uint64_t u;
    const uint8_t *p;
    size_t len;
    int e;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1) {
        if (num == 1 && p) {
            /* a name given twice: the first counts (and nothing is lost) */
            if (!en->full_name && !(en->full_name = join_name(scope, p, len))) return NH_EPB_NOMEM;
        } else if (num == 2 && p) {
            if (!grow((void **)&en->values, &cap, en->nvalues, sizeof *en->values))
                return NH_EPB_NOMEM;
            nh_pb_enum_value_t *ev = &en->values[en->nvalues++];
            reader_t vr = {p, p + len};
            const uint8_t *vp;
            size_t vlen;
            while ((e = next_field(&vr, &num, &u, &vp, &vlen)) == 1) {
                if (num == 1 && vp && !ev->name && !(ev->name = dup_n(vp, vlen)))
                    return NH_EPB_NOMEM;
                if (num == 2 && !vp) ev->number = (int32_t)(uint32_t)u;
            }
            if (e) return e;
            if (!ev->name) return fail(ld, NH_EPB_SCHEMA, "an enum value without a name");
        }
    }
    if (e) return e;
    if (!en->full_name) return fail(ld, NH_EPB_SCHEMA, "an enum without a name");
    return 0;
}

static int load_field(loader_t *ld, load_msg_t *lm, const uint8_t *data, size_t dlen) {
    if (!grow((void **)&lm->m.fields, &lm->cap, lm->m.nfields, sizeof *lm->m.fields))
        return NH_EPB_NOMEM;
    /* raw grows in step with fields */
    raw_field_t *nraw = realloc(lm->raw, lm->cap * sizeof *lm->raw);
    if (!nraw) return NH_EPB_NOMEM;
    lm->raw = nraw;
    nh_pb_field_t *f = &lm->m.fields[lm->m.nfields];
    raw_field_t *rf = &lm->raw[lm->m.nfields];
    memset(f, 0, sizeof *f);
    memset(rf, 0, sizeof *rf);
    lm->m.nfields++;
    rf->oneof_index = -1;
    reader_t r = {data, data + dlen};
    uint32_t num;
    uint64_t u = 0;
    const uint8_t *p;
    size_t len;
    int e;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1) {
        switch (num) {
        case 1:
            if (p && !f->name && !(f->name = dup_n(p, len))) return NH_EPB_NOMEM;
            break;
        case 3:
            if (!p) f->number = (uint32_t)u;
            break;
        case 4:
            if (!p) rf->label = (int)u;
            break;
        case 5:
            if (!p) f->type = (uint8_t)u;
            break;
        case 6:
            if (p && !rf->type_name && !(rf->type_name = dup_n(p, len))) return NH_EPB_NOMEM;
            break;
        case 8: /* FieldOptions: packed = 2 */
            if (p) {
                reader_t orr = {p, p + len};
                const uint8_t *op;
                size_t olen;
                uint64_t ou = 0;
                while ((e = next_field(&orr, &num, &ou, &op, &olen)) == 1) {
                    if (num == 2 && !op) rf->has_packed = 1, rf->packed = ou != 0;
                }
                if (e) return e;
            }
            break;
        case 9:
            if (!p) rf->oneof_index = (int32_t)u;
            break;
        case 17:
            if (!p) rf->proto3_optional = u != 0;
            break;
        default:
            break;
        }
    }
    if (e) return e;
    if (!f->name) return fail(ld, NH_EPB_SCHEMA, "%s: a field without a name", lm->m.full_name);
    if (f->number == 0 || f->number > 0x1FFFFFFF)
        return fail(ld, NH_EPB_SCHEMA, "%s.%s: bad field number", lm->m.full_name, f->name);
    if (f->type == NH_PB_GROUP)
        return fail(ld, NH_EPB_SCHEMA, "%s.%s: groups are not supported", lm->m.full_name, f->name);
    if (f->type < NH_PB_DOUBLE || f->type > NH_PB_SINT64)
        return fail(ld, NH_EPB_SCHEMA, "%s.%s: unknown type %d", lm->m.full_name, f->name, f->type);
    return 0;
}

static int load_message(loader_t *ld, const char *scope, const uint8_t *data, size_t dlen,
                        int proto3) {
    nh_pb_schema_t *s = ld->s;
    /* the name comes first in protoc's output, but do not rely on it: find it before nesting */
    reader_t r = {data, data + dlen};
    uint32_t num;
    uint64_t u;
    const uint8_t *p, *name = NULL;
    size_t len, name_len = 0;
    int e;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1)
        if (num == 1 && p) name = p, name_len = len;
    if (e) return e;
    if (!name) return fail(ld, NH_EPB_SCHEMA, "a message without a name");
    char *full = join_name(scope, name, name_len);
    if (!full) return NH_EPB_NOMEM;
    if (!grow((void **)&s->msgs, &s->cap_msgs, s->nmsgs, sizeof *s->msgs)) {
        free(full);
        return NH_EPB_NOMEM;
    }
    size_t idx = s->nmsgs++;
    s->msgs[idx].m.full_name = full;
    s->msgs[idx].proto3 = proto3;
    r.p = data;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1) {
        if (!p) {
            continue;
        } else if (num == 2) { /* field */
            e = load_field(ld, &s->msgs[idx], p, len);
        } else if (num == 3) { /* nested_type: s->msgs may move, so the index, not a pointer */
            e = load_message(ld, s->msgs[idx].m.full_name, p, len, proto3);
        } else if (num == 4) { /* enum_type */
            e = load_enum(ld, s->msgs[idx].m.full_name, p, len);
        } else if (num == 7) { /* MessageOptions: map_entry = 7 */
            reader_t orr = {p, p + len};
            const uint8_t *op;
            size_t olen;
            while ((e = next_field(&orr, &num, &u, &op, &olen)) == 1)
                if (num == 7 && !op) s->msgs[idx].m.map_entry = u != 0;
        } else if (num == 8) { /* oneof_decl */
            s->msgs[idx].m.noneofs++;
        }
        if (e < 0) return e;
    }
    return e;
}

static int load_file(loader_t *ld, const uint8_t *data, size_t dlen) {
    reader_t r = {data, data + dlen};
    uint32_t num;
    uint64_t u;
    const uint8_t *p, *pkg = NULL;
    size_t len, pkg_len = 0;
    int e, proto3 = 0;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1) {
        if (num == 2 && p) pkg = p, pkg_len = len;
        if (num == 12 && p) proto3 = len == 6 && memcmp(p, "proto3", 6) == 0;
    }
    if (e) return e;
    char *scope = pkg && pkg_len ? dup_n(pkg, pkg_len) : NULL;
    if (pkg && pkg_len && !scope) return NH_EPB_NOMEM;
    r.p = data;
    while ((e = next_field(&r, &num, &u, &p, &len)) == 1) {
        if (num == 4 && p) e = load_message(ld, scope, p, len, proto3);
        if (num == 5 && p) e = load_enum(ld, scope, p, len);
        if (e < 0) break;
    }
    free(scope);
    return e;
}

static const void *find_exact(const nh_pb_schema_t *s, const char *name, int want_msg) {
    if (want_msg) {
        for (size_t i = 0; i < s->nmsgs; i++)
            if (strcmp(s->msgs[i].m.full_name, name) == 0) return &s->msgs[i].m;
    } else {
        for (size_t i = 0; i < s->nenums; i++)
            if (strcmp(s->enums[i].full_name, name) == 0) return &s->enums[i];
    }
    return NULL;
}

/* A type name as protoc writes it (".pkg.Msg") or as people do ("pkg.Msg"); a name that itself
 * starts with a dot (a schema of odd names) is found as it is. */
static const void *find_by_full_name(const nh_pb_schema_t *s, const char *name, int want_msg) {
    const void *t = find_exact(s, name, want_msg);
    if (!t && name[0] == '.') t = find_exact(s, name + 1, want_msg);
    return t;
}

static int cmp_field(const void *a, const void *b) {
    const nh_pb_field_t *x = a, *y = b;
    return x->number < y->number ? -1 : x->number > y->number;
}

/* Type names to pointers, presence and packing from the raw options; fields sorted by number. */
static int resolve(loader_t *ld) {
    nh_pb_schema_t *s = ld->s;
    for (size_t i = 0; i < s->nmsgs; i++) {
        load_msg_t *lm = &s->msgs[i];
        for (size_t j = 0; j < lm->m.nfields; j++) {
            nh_pb_field_t *f = &lm->m.fields[j];
            raw_field_t *rf = &lm->raw[j];
            if (f->type == NH_PB_MESSAGE || f->type == NH_PB_ENUM) {
                if (!rf->type_name)
                    return fail(ld, NH_EPB_SCHEMA, "%s.%s: no type name", lm->m.full_name, f->name);
                const void *t = find_by_full_name(s, rf->type_name, f->type == NH_PB_MESSAGE);
                if (!t)
                    return fail(ld, NH_EPB_SCHEMA,
                                "%s.%s: type %s is not in the set (protoc --include_imports?)",
                                lm->m.full_name, f->name, rf->type_name);
                if (f->type == NH_PB_MESSAGE)
                    f->message = t;
                else
                    f->enumt = t;
                if (f->type == NH_PB_ENUM && f->enumt->nvalues == 0)
                    return fail(ld, NH_EPB_SCHEMA, "%s: an enum without values",
                                f->enumt->full_name);
            }
            f->repeated = rf->label == 3;
            f->oneof = rf->proto3_optional || rf->oneof_index < 0 ? -1 : rf->oneof_index;
            if (f->oneof >= (int32_t)lm->m.noneofs)
                return fail(ld, NH_EPB_SCHEMA, "%s.%s: bad oneof index", lm->m.full_name, f->name);
            f->presence = !lm->proto3 || rf->proto3_optional || rf->oneof_index >= 0 ||
                          f->type == NH_PB_MESSAGE;
            f->packed = f->repeated && nh_pb_packable(f->type) &&
                        (rf->has_packed ? rf->packed : lm->proto3);
            if (s->pomelo) f->packed = f->count_prefixed = f->repeated && nh_pb_packable(f->type);
            if (s->pomelo) f->any_wire = 1;
            free(rf->type_name);
            rf->type_name = NULL;
        }
        free(lm->raw);
        lm->raw = NULL;
        if (lm->m.nfields > 1) /* qsort may not be given NULL, even for none */
            qsort(lm->m.fields, lm->m.nfields, sizeof *lm->m.fields, cmp_field);
        for (size_t j = 1; j < lm->m.nfields; j++)
            if (lm->m.fields[j].number == lm->m.fields[j - 1].number)
                return fail(ld, NH_EPB_SCHEMA, "%s: field number %u used twice", lm->m.full_name,
                            lm->m.fields[j].number);
    }
    uint32_t index = 0;
    for (size_t i = 0; i < s->nmsgs; i++)
        for (size_t j = 0; j < s->msgs[i].m.nfields; j++)
            s->msgs[i].m.fields[j].index = index++;
    return 0;
}

void nh_pb_schema_free(nh_pb_schema_t *s) {
    if (!s) return;
    for (size_t i = 0; i < s->nmsgs; i++) {
        load_msg_t *lm = &s->msgs[i];
        for (size_t j = 0; j < lm->m.nfields; j++) {
            free((char *)lm->m.fields[j].name);
            if (lm->raw) free(lm->raw[j].type_name);
        }
        free(lm->raw);
        free(lm->m.fields);
        free((char *)lm->m.full_name);
    }
    free(s->msgs);
    for (size_t i = 0; i < s->nenums; i++) {
        for (size_t j = 0; j < s->enums[i].nvalues; j++)
            free((char *)s->enums[i].values[j].name);
        free(s->enums[i].values);
        free((char *)s->enums[i].full_name);
    }
    free(s->enums);
    free(s);
}

int nh_pb_schema_load(nh_pb_schema_t **out, const uint8_t *set, size_t len, char *err,
                      size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    loader_t ld = {calloc(1, sizeof(nh_pb_schema_t)), err, errlen};
    if (!ld.s) return NH_EPB_NOMEM;
    reader_t r = {set, set + len};
    uint32_t num;
    uint64_t u;
    const uint8_t *p;
    size_t flen;
    int e;
    while ((e = next_field(&r, &num, &u, &p, &flen)) == 1) {
        if (num == 1 && p && (e = load_file(&ld, p, flen)) < 0) break;
    }
    if (e == 0) e = resolve(&ld);
    if (e < 0) {
        if (err && errlen && !err[0])
            snprintf(err, errlen, "not a FileDescriptorSet: %s", nh_pb_strerror(e));
        nh_pb_schema_free(ld.s);
        return e == NH_EPB_NOMEM ? e : NH_EPB_SCHEMA;
    }
    *out = ld.s;
    return 0;
}

int nh_pb_schema_new(nh_pb_schema_t **out) {
    *out = calloc(1, sizeof(nh_pb_schema_t));
    return *out ? 0 : NH_EPB_NOMEM;
}

int nh_pb_schema_add_message(nh_pb_schema_t *s, const char *full_name) {
    if (!grow((void **)&s->msgs, &s->cap_msgs, s->nmsgs, sizeof *s->msgs)) return NH_EPB_NOMEM;
    char *name = dup_n((const uint8_t *)full_name, strlen(full_name));
    if (!name) return NH_EPB_NOMEM;
    s->msgs[s->nmsgs].m.full_name = name;
    return (int)s->nmsgs++;
}

int nh_pb_schema_add_field(nh_pb_schema_t *s, int msg, const char *name, uint32_t number, int type,
                           int repeated, const char *type_name) {
    if (msg < 0 || (size_t)msg >= s->nmsgs) return NH_EPB_SCHEMA;
    load_msg_t *lm = &s->msgs[msg];
    if (!grow((void **)&lm->m.fields, &lm->cap, lm->m.nfields, sizeof *lm->m.fields))
        return NH_EPB_NOMEM;
    raw_field_t *nraw = realloc(lm->raw, lm->cap * sizeof *lm->raw);
    if (!nraw) return NH_EPB_NOMEM;
    lm->raw = nraw;
    nh_pb_field_t *f = &lm->m.fields[lm->m.nfields];
    raw_field_t *rf = &lm->raw[lm->m.nfields];
    memset(f, 0, sizeof *f);
    memset(rf, 0, sizeof *rf);
    rf->oneof_index = -1;
    rf->label = repeated ? 3 : 1;
    f->number = number;
    f->type = (uint8_t)type;
    if (!(f->name = dup_n((const uint8_t *)name, strlen(name)))) return NH_EPB_NOMEM;
    lm->m.nfields++;
    if (type_name && !(rf->type_name = dup_n((const uint8_t *)type_name, strlen(type_name))))
        return NH_EPB_NOMEM;
    return 0;
}

int nh_pb_schema_finish(nh_pb_schema_t *s, int flavour, char *err, size_t errlen) {
    loader_t ld = {s, err, errlen};
    if (err && errlen) err[0] = 0;
    s->pomelo = flavour == NH_PB_POMELO;
    for (size_t i = 0; i < s->nmsgs; i++) {
        for (size_t j = 0; j < s->msgs[i].m.nfields; j++) {
            const nh_pb_field_t *f = &s->msgs[i].m.fields[j];
            if (f->number == 0 || f->number > 0x1FFFFFFF || f->type < NH_PB_DOUBLE ||
                f->type > NH_PB_SINT64 || f->type == NH_PB_GROUP || f->type == NH_PB_ENUM)
                return fail(&ld, NH_EPB_SCHEMA, "%s.%s: bad field number or type",
                            s->msgs[i].m.full_name, f->name);
        }
    }
    return resolve(&ld);
}

const nh_pb_message_t *nh_pb_schema_message(const nh_pb_schema_t *s, const char *name) {
    const nh_pb_message_t *m = find_by_full_name(s, name, 1);
    if (m || strchr(name, '.')) return m;
    size_t nl = strlen(name);
    for (size_t i = 0; i < s->nmsgs; i++) {
        const char *full = s->msgs[i].m.full_name;
        size_t fl = strlen(full);
        if (fl > nl && full[fl - nl - 1] == '.' && strcmp(full + fl - nl, name) == 0) {
            if (m) return NULL; /* ambiguous */
            m = &s->msgs[i].m;
        }
    }
    return m;
}

size_t nh_pb_schema_message_count(const nh_pb_schema_t *s) {
    return s->nmsgs;
}

const nh_pb_message_t *nh_pb_schema_message_at(const nh_pb_schema_t *s, size_t i) {
    return i < s->nmsgs ? &s->msgs[i].m : NULL;
}

const nh_pb_field_t *nh_pb_field_by_number(const nh_pb_message_t *m, uint32_t number) {
    size_t lo = 0, hi = m->nfields;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t n = m->fields[mid].number;
        if (n == number) return &m->fields[mid];
        if (n < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const nh_pb_field_t *nh_pb_field_by_name(const nh_pb_message_t *m, const char *name) {
    for (size_t i = 0; i < m->nfields; i++)
        if (strcmp(m->fields[i].name, name) == 0) return &m->fields[i];
    return NULL;
}

const nh_pb_enum_value_t *nh_pb_enum_by_number(const nh_pb_enum_t *e, int32_t number) {
    for (size_t i = 0; i < e->nvalues; i++)
        if (e->values[i].number == number) return &e->values[i];
    return NULL;
}

const nh_pb_enum_value_t *nh_pb_enum_by_name(const nh_pb_enum_t *e, const char *name, size_t len) {
    for (size_t i = 0; i < e->nvalues; i++)
        if (strlen(e->values[i].name) == len && memcmp(e->values[i].name, name, len) == 0)
            return &e->values[i];
    return NULL;
}
