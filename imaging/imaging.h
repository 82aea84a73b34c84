/*
 * imaging.h - MRI volumes (NIfTI-1/-2 through nifti_clib), cases, datasets,
 * preprocessing, label conventions and BraTS metrics.
 *
 * Voxel order everywhere is the NIfTI file order: x fastest, then y, then z
 * (index = x + nx*(y + ny*z)). As a tensor this is [z][y][x], i.e. D=z, H=y,
 * W=x, so buffers pass to the shim without reordering.
 *
 * Internal label classes: 0 background, 1 NCR/NET (necrosis or
 * non-enhancing core), 2 ED (edema), 3 ET (enhancing). Regions as BraTS
 * reports them: WT = {1,2,3}, TC = {1,3}, ET = {3}.
 *
 * Errors follow base.h: 0 / -1 with fs_error() naming the file.
 */
#ifndef FEDSEG_IMAGING_H
#define FEDSEG_IMAGING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { IMG_T1 = 0, IMG_T1C = 1, IMG_T2 = 2, IMG_FLAIR = 3, IMG_NMOD = 4 } img_modality;

/* "t1", "t1c", "t2", "flair". */
const char *img_modality_name(int m);
/* Parses "t1", "t1c" (also "t1ce", "t1gd"), "t2", "flair"; -1 if unknown. */
int img_modality_parse(const char *s);
/* Parses a comma list ("flair,t1c") into mods[4]; returns count or -1. */
int img_modality_list_parse(const char *s, int mods[4]);

/* A volume as float32 on its grid, with the header kept for writing. */
typedef struct img_volume {
	int nx, ny, nz;
	float *data;           /* nx*ny*nz, scaling applied */
	double affine[4][4];   /* voxel -> world mm: sform, else qform, else pixdim */
	double spacing[3];     /* voxel size in mm */
	void *hdr;             /* nifti_image* without data (private) */
	char *path;            /* the file it came from */
} img_volume;

/* Reads a 3-D NIfTI (or 4-D with one volume) of any datatype into float with
 * scl_slope/scl_inter applied (slope 0 = none). Refuses: unreadable or
 * truncated files, non-NIfTI, more than one volume, NaN/Inf voxels. */
int img_volume_read(const char *path, img_volume *out);
void img_volume_free(img_volume *v);
/* Reads volume `index` (0-based) of a 4-D NIfTI as a 3-D img_volume whose
 * header is 3-D (outputs written on it are 3-D). index must be below the
 * file's 4th dimension; dims 5..7 must be 1. */
int img_volume_read_index(const char *path, int index, img_volume *out);
/* Header facts without reading voxels: dims (nt = 4th dim, 1 if none),
 * 0 or -1 with an error naming the file (unreadable, not NIfTI). */
int img_volume_probe(const char *path, int dims[4]);
/* Resamples src onto grid's voxels through both affines (world mm):
 * trilinear (nearest = 0) or nearest neighbour; outside src -> 0. out gets
 * grid's dims, affine and header, src's path. */
int img_resample(const img_volume *src, const img_volume *grid, int nearest,
    img_volume *out);
/* 1 if the two voxel-to-world affines differ in the sign of the x axis
 * (a left/right flip), used for error messages. */
int img_affine_lr_flipped(const img_volume *a, const img_volume *b);
/* 0 if a and b share dims and affine (within 1e-3 mm); else -1 with an
 * error naming both files. */
int img_grid_check(const img_volume *a, const img_volume *b);

/* Writes a uint8 label map on the exact grid and header of `like` (dims,
 * pixdim, qform/sform and their codes, xyzt units; scaling reset), atomically
 * (temp + fsync + rename; nothing left on failure). .nii or .nii.gz by name. */
int img_labels_write(const char *path, const img_volume *like,
    const uint8_t *labels);
/* Writes a float32 volume on `like`'s grid (tests, debugging). */
int img_volume_write_float(const char *path, const img_volume *like,
    const float *data);

/* Label conventions. */
typedef enum { IMG_LABELS_BRATS2013 = 0, IMG_LABELS_BRATS2017 = 1,
	IMG_LABELS_BRATS2023 = 2,
	/* Medical Segmentation Decathlon Task01: 1 edema, 2 non-enhancing
	 * tumour, 3 enhancing tumour (-> classes 2, 1, 3). */
	IMG_LABELS_MSD = 3 } img_label_conv;
/* Parses "brats2013", "brats2017" (= 2017..2021), "brats2023", "msd".
 * -1 if not. */
int img_label_conv_parse(const char *s);
/* File label values -> internal classes, in place over n voxels. Values
 * outside the convention are an error (names the value). */
int img_labels_to_classes(uint8_t *lab, size_t n, img_label_conv conv);
/* Internal classes -> file labels of a convention, in place. */
void img_labels_from_classes(uint8_t *lab, size_t n, img_label_conv conv);
/* Guesses the convention of a label volume from the values present
 * (4 present -> 2017, 3 present without 4 -> 2023 unless ...). */
img_label_conv img_label_conv_guess(const uint8_t *lab, size_t n);

/* Reference to one case on disk. */
typedef struct img_case_ref {
	char *id;
	char *paths[IMG_NMOD];  /* NULL if absent */
	char *label;            /* NULL if none */
	int label_conv;         /* img_label_conv, or -1 = guess from values */
	int prenormalised;      /* 1 if images are already z-scored (skip) */
	char *mask;             /* optional brain mask file, NULL if none */
	/* Added for 4-D inputs and resampling; zero-initialised callers keep
	 * the old behaviour. volume[m] = 0: paths[m] is one 3-D volume (or a
	 * 4-D file with one volume); k > 0: modality m is volume k-1 of the
	 * 4-D file paths[m] (MSD Task01: one file holds all modalities). */
	int volume[IMG_NMOD];
	/* 1: modalities, label and mask on another grid than the first
	 * modality are resampled onto it (trilinear for images, nearest for
	 * labels and masks) instead of being refused. */
	int resample;
} img_case_ref;

/* A case (or file) left out by img_dataset_scan, and why. */
typedef struct img_skip {
	char *path;    /* the case folder, session folder, manifest or file */
	char *id;      /* the case id if one was formed, else NULL */
	char *reason;  /* one line: "no flair image", "two candidates ..." */
} img_skip;

typedef struct {
	img_case_ref *cases;
	int n;
	/* Added: what was left out (callers that zero-initialise img_dataset
	 * get these filled and freed by img_dataset_free). */
	img_skip *skipped;
	int nskipped;
	const char *layout; /* static: "manifest-csv", "brats", "bids", ... */
} img_dataset;

/* Finds the cases under dir: a manifest (fedseg-manifest.csv / .json in dir)
 * wins; otherwise BraTS 2017-2021 and 2023 case folders (dir itself may be
 * one case folder), and DeepMedic BRATS 2013 folders. Symlinks are followed.
 * Cases are sorted by id. Requires the modalities mods[0..nmod) in every
 * case; cases lacking one are skipped with a warning line. */
int img_dataset_scan(const char *dir, const int *mods, int nmod,
    img_dataset *out);
/* Flags for img_dataset_scan_ex. */
#define IMG_SCAN_ALLOW_EMPTY 1  /* no usable case is not an error */
#define IMG_SCAN_NO_PROBE 2     /* do not open file headers */
/* img_dataset_scan with flags. Layouts (see docs/data.md): manifest, MSD
 * Task01 (dataset.json), Flywheel sync (SUBJECTS/.../FILES with
 * .flywheel.json sidecars), BIDS (sub-*), BraTS 2017-2021 / 2023 and
 * DeepMedic folders, Flywheel tar downloads (subject/session/acquisition
 * folders). Unless IMG_SCAN_NO_PROBE, every chosen file's NIfTI header is
 * read; an unreadable one skips its case. */
int img_dataset_scan_ex(const char *dir, const int *mods, int nmod,
    int flags, img_dataset *out);
void img_dataset_free(img_dataset *ds);

/* Flywheel: the modality a file holds, from its classification (the
 * `classification` object of a sidecar or of config.json's
 * inputs.<name>.object, as cJSON text; NULL if none) first, then the
 * acquisition label and the file name. Returns IMG_T1..IMG_FLAIR,
 * IMG_NMOD for a segmentation/label file, or -1 when it is none of
 * these (localizer, diffusion, unknown name); *why (static text) says
 * what decided. */
int img_flywheel_modality(const char *classification_json,
    const char *acq_label, const char *file_name, const char **why);

/* A case loaded and preprocessed for the network. */
typedef struct img_case {
	char *id;
	int nmod;
	int nx, ny, nz;          /* full input grid */
	int box[6];              /* crop box: x0,y0,z0 (inclusive), x1,y1,z1 (exclusive) */
	int cx, cy, cz;          /* cropped dims (x1-x0, ...) */
	float *img;              /* [nmod][cz][cy][cx], z-scored inside mask */
	uint8_t *mask;           /* [cz][cy][cx] brain mask */
	uint8_t *label;          /* [cz][cy][cx] internal classes, NULL if none */
	img_volume ref;          /* header (data freed) of the first modality */
} img_case;

/* Loads the modalities mods[0..nmod) of a case (all on one grid, else an
 * error naming both files), builds the brain mask (non-zero in any
 * modality, or the case's mask file), crops to the mask's box + margin
 * voxels, z-scores each modality inside the mask, and loads the label (if
 * want_label and present) converted to internal classes on the same crop. */
int img_case_load(const img_case_ref *ref, const int *mods, int nmod,
    int margin, int want_label, img_case *out);
void img_case_free(img_case *c);
/* Pastes cropped labels back onto the full grid (zeros outside). */
void img_case_uncrop(const img_case *c, const uint8_t *cropped, uint8_t *full);

/* BraTS metrics for one case: index 0 WT, 1 TC, 2 ET. pred and ref are
 * internal classes on one grid with voxel spacing sp (mm). Dice of two
 * empty regions is 1; HD95 is 0 when both are empty and 373.13 (the BraTS
 * value) when only one is. Volumes are of the prediction, in mL. */
typedef struct {
	double dice[3];
	double hd95[3];
	double vol_pred_ml[3];
	double vol_ref_ml[3];
} img_metrics;

int img_metrics_compute(const uint8_t *pred, const uint8_t *ref, int nx,
    int ny, int nz, const double sp[3], img_metrics *out);

/* ---- additions by the imaging room ---- */

/* Reads a label file (any datatype; values must be integers 0..255 after
 * scaling, else an error naming the file and value) into a malloc'd
 * uint8 buffer *lab (caller frees). If vol is not NULL it receives the
 * volume's grid and header (data NULL; free with img_volume_free). */
int img_labels_read(const char *path, uint8_t **lab, img_volume *vol);
/* "brats2013", "brats2017", "brats2023"; "guess" for -1. Static string. */
const char *img_label_conv_name(int conv);

/* Writes a synthetic case <dir>/<id>/<id>_{t1,t1ce,t2,flair,seg}.nii.gz
 * (BraTS 2017-2021 naming and labels) on an n x n x 2n/3 grid of 1 mm
 * voxels; the tumour's place and size follow from seed. */
int img_phantom_write(const char *dir, const char *id, int n, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
