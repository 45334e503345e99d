/* protobuf — a schema-driven protocol buffers codec: schemas from a FileDescriptorSet, the
 * standard wire format (proto2 and proto3) checked against them.
 *
 * Pure functions over caller-owned memory; no I/O, no libuv, no Lua (lua_protobuf.c turns the
 * decoder's events into Lua tables and Lua tables into writer calls).
 *
 * Why not a library: Debian's libprotobuf-c decodes into C structs generated per schema at build
 * time (a game's .proto is only known at run time), libupb's 2020 snapshot has no stable API for
 * loading descriptors at run time, and libprotobuf is C++. What a LuaJIT host needs is small:
 * read a FileDescriptorSet (what `protoc --descriptor_set_out --include_imports` writes, so
 * protoc stays the one .proto parser) and walk the wire format against it. docs/architecture.md
 * has the longer argument.
 *
 * Schema: nh_pb_schema_load() copies everything it keeps; the caller frees the set's bytes at
 * once and the schema with nh_pb_schema_free(). Messages, fields and enums are read-only after
 * loading and live as long as the schema. Groups (proto2's deprecated kind) are refused at load.
 *
 * Decoding: nh_pb_decode() checks the bytes against a message type and reports each known field
 * to a visitor; unknown fields (groups included) are skipped. Stricter than protobuf's C++
 * parser in one way: a known field with a wire type its type cannot have is an error, not an
 * unknown field (a client sending it has the wrong schema, and should hear so).
 *
 * Errors are negative NH_EPB_* values; nh_pb_strerror() names them.
 */
#ifndef NH_PROTOBUF_H
#define NH_PROTOBUF_H

#include <stddef.h>
#include <stdint.h>

enum {
    NH_EPB_TRUNCATED = -4001, /* a value, length or tag runs past the end */
    NH_EPB_VARINT = -4002,    /* varint over 10 bytes or over 64 bits */
    NH_EPB_WIRE_TYPE = -4003, /* wire type 6/7, or one the field's type cannot have */
    NH_EPB_FIELD_NUM = -4004, /* field number 0 or over 2^29-1 */
    NH_EPB_DEPTH = -4005,     /* messages (or unknown groups) nested over NH_PB_MAX_DEPTH */
    NH_EPB_GROUP = -4006,     /* unbalanced group end */
    NH_EPB_NOMEM = -4007,     /* allocation failed */
    NH_EPB_SCHEMA = -4008,    /* descriptor set malformed or unsupported (see the err text) */
    NH_EPB_RANGE = -4009,     /* encode: a value out of its type's range */
    NH_EPB_VISITOR = -4010,   /* the visitor returned non-zero */
};

/* Messages nested deeper than this are refused (protobuf's C++ default is 100). */
#define NH_PB_MAX_DEPTH 100

const char *nh_pb_strerror(int err);

/* Field types: the numbers of FieldDescriptorProto.Type. */
enum nh_pb_type {
    NH_PB_DOUBLE = 1,
    NH_PB_FLOAT = 2,
    NH_PB_INT64 = 3,
    NH_PB_UINT64 = 4,
    NH_PB_INT32 = 5,
    NH_PB_FIXED64 = 6,
    NH_PB_FIXED32 = 7,
    NH_PB_BOOL = 8,
    NH_PB_STRING = 9,
    NH_PB_GROUP = 10,
    NH_PB_MESSAGE = 11,
    NH_PB_BYTES = 12,
    NH_PB_UINT32 = 13,
    NH_PB_ENUM = 14,
    NH_PB_SFIXED32 = 15,
    NH_PB_SFIXED64 = 16,
    NH_PB_SINT32 = 17,
    NH_PB_SINT64 = 18,
};

enum nh_pb_wire { NH_PB_VARINT = 0, NH_PB_I64 = 1, NH_PB_LEN = 2, NH_PB_I32 = 5 };

typedef struct nh_pb_message nh_pb_message_t;
typedef struct nh_pb_enum nh_pb_enum_t;

typedef struct nh_pb_field {
    const char *name;
    uint32_t number;
    uint8_t type;     /* enum nh_pb_type */
    uint8_t repeated; /* label repeated (maps too) */
    uint8_t packed;   /* repeated scalars are written packed (proto3 default, proto2 [packed]) */
    uint8_t presence; /* written when set even if zero: proto2, proto3 `optional`, oneof members,
                         messages. Without it (proto3 plain scalars) zero values are not written */
    uint8_t count_prefixed;         /* pomelo-protobuf: a packed run is the element's tag, then the
                                       element count (not a byte length), then the elements */
    uint8_t any_wire;               /* pomelo-protobuf: a tag's wire type is not trusted (its
                                       browser build writes 2 for a uInt32); decode by the type */
    int32_t oneof;                  /* index of the real oneof in the message, -1 for none */
    uint32_t index;                 /* 0, 1, ... over the schema's fields, message by message in
                                       nh_pb_schema_message_at order: a caller's own data per
                                       field */
    const nh_pb_message_t *message; /* type of a message field (a map's entry type) */
    const nh_pb_enum_t *enumt;      /* type of an enum field */
} nh_pb_field_t;

struct nh_pb_message {
    const char *full_name; /* "pkg.Outer.Inner" */
    nh_pb_field_t *fields; /* by number, ascending */
    size_t nfields;
    uint32_t noneofs;
    uint8_t map_entry; /* a map's entry type: field 1 key, field 2 value */
};

typedef struct nh_pb_enum_value {
    const char *name;
    int32_t number;
} nh_pb_enum_value_t;

struct nh_pb_enum {
    const char *full_name;
    nh_pb_enum_value_t *values; /* in declaration order (the first is the default) */
    size_t nvalues;
};

typedef struct nh_pb_schema nh_pb_schema_t;

/* Loads a serialized FileDescriptorSet. On error returns NH_EPB_SCHEMA/NH_EPB_NOMEM (or a wire
 * error) with a sentence in err, and *out is NULL. Type names must all resolve inside the set
 * (protoc's --include_imports guarantees it). */
int nh_pb_schema_load(nh_pb_schema_t **out, const uint8_t *set, size_t len, char *err,
                      size_t errlen);
void nh_pb_schema_free(nh_pb_schema_t *s);

/* Building a schema by hand instead (pomelo-protobuf's JSON schemas, lua_protobuf.c): new, then
 * messages and their fields (type_name: the full name of a message type, for NH_PB_MESSAGE),
 * then finish, which resolves type names and, for the pomelo flavour, gives every field presence
 * and writes repeated scalars count-prefixed. add_message returns the message's index (>= 0).
 * On error the schema is still to be freed by the caller; finish's error has a sentence in err. */
enum nh_pb_flavour { NH_PB_PROTO2 = 0, NH_PB_POMELO = 1 };
int nh_pb_schema_new(nh_pb_schema_t **out);
int nh_pb_schema_add_message(nh_pb_schema_t *s, const char *full_name);
int nh_pb_schema_add_field(nh_pb_schema_t *s, int msg, const char *name, uint32_t number, int type,
                           int repeated, const char *type_name);
int nh_pb_schema_finish(nh_pb_schema_t *s, int flavour, char *err, size_t errlen);

/* A message type by full name ("pkg.Msg", a leading dot allowed) or, when only one type has
 * that name, by its last component ("Msg"). NULL when none (or several) match. */
const nh_pb_message_t *nh_pb_schema_message(const nh_pb_schema_t *s, const char *name);
size_t nh_pb_schema_message_count(const nh_pb_schema_t *s);
const nh_pb_message_t *nh_pb_schema_message_at(const nh_pb_schema_t *s, size_t i);

const nh_pb_field_t *nh_pb_field_by_number(const nh_pb_message_t *m, uint32_t number);
const nh_pb_field_t *nh_pb_field_by_name(const nh_pb_message_t *m, const char *name);
/* Enum values: NULL / 0 when absent. */
const nh_pb_enum_value_t *nh_pb_enum_by_number(const nh_pb_enum_t *e, int32_t number);
const nh_pb_enum_value_t *nh_pb_enum_by_name(const nh_pb_enum_t *e, const char *name, size_t len);

/* ---- decoding ---- */

/* A scalar as decoded: which member is set follows from the field's type. */
typedef struct nh_pb_scalar {
    union {
        int64_t i;  /* int32/64, sint32/64, sfixed32/64, enum */
        uint64_t u; /* uint32/64, fixed32/64 */
        double d;   /* double, float */
        int b;      /* bool */
    };
} nh_pb_scalar_t;

/* Each callback returns 0 to go on; non-zero stops decoding with NH_EPB_VISITOR. A repeated
 * field calls its callback once per element (packed or not). A submessage (a map entry too) is
 * begin_message, its fields, end_message. */
typedef struct nh_pb_visitor {
    int (*scalar)(void *ud, const nh_pb_field_t *f, nh_pb_scalar_t v);
    int (*bytes)(void *ud, const nh_pb_field_t *f, const uint8_t *p, size_t len);
    int (*begin_message)(void *ud, const nh_pb_field_t *f);
    int (*end_message)(void *ud, const nh_pb_field_t *f);
} nh_pb_visitor_t;

/* Decodes a whole message of type m. Returns 0 or a negative NH_EPB_* error. */
int nh_pb_decode(const nh_pb_message_t *m, const uint8_t *data, size_t len,
                 const nh_pb_visitor_t *v, void *ud);

/* ---- encoding ---- */

/* A growing output buffer; `failed` latches an allocation failure (every write after it is a
 * no-op, so callers check once at the end). Free data with nh_pb_buf_free. */
typedef struct nh_pb_buf {
    uint8_t *data;
    size_t len, cap;
    int failed;
} nh_pb_buf_t;

void nh_pb_buf_free(nh_pb_buf_t *b);
void nh_pb_put_varint(nh_pb_buf_t *b, uint64_t v);
void nh_pb_put_tag(nh_pb_buf_t *b, uint32_t number, int wire);
void nh_pb_put_bytes(nh_pb_buf_t *b, const void *p, size_t len); /* varint length + bytes */
/* A length-delimited section whose length is known only at its end (a submessage, a packed
 * array): begin returns a mark, end writes the length in front of what was written since. */
size_t nh_pb_begin_len(nh_pb_buf_t *b);
void nh_pb_end_len(nh_pb_buf_t *b, size_t mark);
/* A scalar of a numeric type (not string/bytes/message) without its tag: the wire form of the
 * type (varint, zigzag, fixed 32/64). */
void nh_pb_put_scalar(nh_pb_buf_t *b, int type, nh_pb_scalar_t v);
/* The wire type a field of this type is written with. */
int nh_pb_wire_of(int type);
/* True for the types a repeated field may write packed (every numeric scalar). */
int nh_pb_packable(int type);

/* Parses a decimal integer (optional '-', digits only) into a 64-bit value: signed ones in
 * int64's range, unsigned ones in uint64's. Returns 0 or NH_EPB_RANGE. */
int nh_pb_parse_int64(const char *s, size_t len, int is_unsigned, nh_pb_scalar_t *out);

#endif
