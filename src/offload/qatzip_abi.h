#pragma once
// The part of QATzip's C API that qzfs uses, declared from its public header `qatzip.h` of
// QATzip 1.3.1 (API version 2.5). qzfs never links QATzip: qat_device.cc loads it with dlopen,
// and tests load a stand-in built from this same declaration (tests/qat_standin/).
//
// The layouts were checked against the real header by compiling offsetof() probes of it
// (docs/QAT.md); the static_asserts below pin those numbers so a change here cannot slip by.
// Only what is used is declared: the session handle, the session parameters, the return codes.

#include <cstddef>

extern "C" {

typedef struct QzSession_S {
  signed long int hw_session_stat;
  int thd_sess_stat;
  void* internal;
  unsigned long total_in;
  unsigned long total_out;
} QzSession_T;

typedef enum { QZ_DYNAMIC_HDR = 0, QZ_STATIC_HDR } QzHuffmanHdr_T;
typedef enum { QZ_DIR_COMPRESS = 0, QZ_DIR_DECOMPRESS, QZ_DIR_BOTH } QzDirection_T;
typedef enum { QZ_DEFLATE_4B = 0, QZ_DEFLATE_GZIP, QZ_DEFLATE_GZIP_EXT, QZ_DEFLATE_RAW } QzDataFormat_T;

typedef struct QzSessionParams_S {
  QzHuffmanHdr_T huffman_hdr;
  QzDirection_T direction;
  QzDataFormat_T data_fmt;
  unsigned int comp_lvl;
  unsigned char comp_algorithm;
  unsigned int max_forks;
  unsigned char sw_backup;
  unsigned int hw_buff_sz;
  unsigned int strm_buff_sz;
  unsigned int input_sz_thrshold;
  unsigned int req_cnt_thrshold;
  unsigned int wait_cnt_thrshold;
} QzSessionParams_T;

typedef int (*qzInit_fn)(QzSession_T* sess, unsigned char sw_backup);
typedef int (*qzSetupSession_fn)(QzSession_T* sess, QzSessionParams_T* params);
typedef int (*qzCompress_fn)(QzSession_T* sess, const unsigned char* src, unsigned int* src_len, unsigned char* dest,
                             unsigned int* dest_len, unsigned int last);
typedef int (*qzDecompress_fn)(QzSession_T* sess, const unsigned char* src, unsigned int* src_len,
                               unsigned char* dest, unsigned int* dest_len);
typedef int (*qzTeardownSession_fn)(QzSession_T* sess);
typedef int (*qzClose_fn)(QzSession_T* sess);
typedef int (*qzGetDefaults_fn)(QzSessionParams_T* defaults);

}  // extern "C"

namespace qzfs::offload::qatzip {

// Return codes (qatzip.h, QATzip 1.3.1).
inline constexpr int ok = 0, duplicate = 1, force_sw = 2;
inline constexpr int params = -1, fail = -2, buf_error = -3, data_error = -4, timeout = -5;
inline constexpr int no_hw = 11, no_mdrv = 12, no_inst_attach = 13, low_mem = 14;  // "using SW"
inline constexpr int nosw_no_hw = -101, nosw_no_mdrv = -102, nosw_no_inst_attach = -103, nosw_low_mem = -104,
                     no_sw_avail = -105;
inline constexpr unsigned char deflate = 8;  // QZ_DEFLATE
inline constexpr unsigned hw_buff_max = 512 * 1024;  // QZ_HW_BUFF_MAX_SZ

// x86_64 layout of QATzip 1.3.1, measured with offsetof() on its header.
static_assert(sizeof(QzSession_T) == 40 && offsetof(QzSession_T, internal) == 16 &&
              offsetof(QzSession_T, total_out) == 32);
static_assert(sizeof(QzSessionParams_T) == 48 && offsetof(QzSessionParams_T, data_fmt) == 8 &&
              offsetof(QzSessionParams_T, comp_lvl) == 12 && offsetof(QzSessionParams_T, comp_algorithm) == 16 &&
              offsetof(QzSessionParams_T, sw_backup) == 24 && offsetof(QzSessionParams_T, hw_buff_sz) == 28 &&
              offsetof(QzSessionParams_T, input_sz_thrshold) == 36 &&
              offsetof(QzSessionParams_T, wait_cnt_thrshold) == 44);
static_assert(sizeof(QzDataFormat_T) == 4 && QZ_DEFLATE_GZIP == 1 && QZ_DIR_BOTH == 2);

}  // namespace qzfs::offload::qatzip
