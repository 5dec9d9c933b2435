# Reference outputs of R limma with array weights (one precision weight per profile) for
# tests/pp/test_limma.py, as used by pairot's donor resampling (DatasetMap.bootstrap).
#
# Run from the repository root:
#   Rscript tests/data/limma/make_limma_weighted.R
# Reads NAME_expr.csv / NAME_labels.csv and writes
#   NAME_weights.csv        profile,weight (a fixed formula, no random numbers)
#   NAME_r_ova_weighted.csv one-vs-all: per cluster, lmFit(expr, ~ is_c, weights = w)
#   NAME_r_ava_weighted.csv all-vs-all: lmFit(expr, ~ 0 + cluster, weights = w), contrasts
suppressPackageStartupMessages(library(limma))

dir <- "tests/data/limma"
fixtures <- c("a_balanced", "c_unbalanced")

fmt <- function(x) sprintf("%.17g", x)

write_table <- function(df, path) {
  for (col in names(df)) if (is.double(df[[col]])) df[[col]] <- fmt(df[[col]])
  write.csv(df, path, row.names = FALSE, quote = FALSE)
}

for (name in fixtures) {
  expr <- as.matrix(read.csv(file.path(dir, paste0(name, "_expr.csv")),
                             row.names = 1, check.names = FALSE))
  labels <- read.csv(file.path(dir, paste0(name, "_labels.csv")))$label
  n <- ncol(expr)
  w <- 0.25 + 0.5 * ((seq_len(n) * 7) %% 5)
  write_table(data.frame(profile = seq_len(n) - 1, weight = w),
              file.path(dir, paste0(name, "_weights.csv")))
  clusters <- sort(unique(labels))
  ova <- list()
  for (c in clusters) {
    is_c <- as.numeric(labels == c)
    design <- model.matrix(~is_c)
    fit <- eBayes(lmFit(expr, design, weights = w))
    tt <- topTable(fit, coef = 2, number = Inf, sort.by = "none")
    ova[[length(ova) + 1]] <- data.frame(
      cluster = c, gene = rownames(tt), logFC = tt$logFC, t = tt$t,
      P.Value = tt$P.Value, adj.P.Val = tt$adj.P.Val)
  }
  write_table(do.call(rbind, ova), file.path(dir, paste0(name, "_r_ova_weighted.csv")))

  cluster <- factor(paste0("c", labels), levels = paste0("c", clusters))
  design <- model.matrix(~0 + cluster)
  colnames(design) <- levels(cluster)
  pairs <- combn(clusters, 2)
  contrast_names <- paste0("c", pairs[1, ], "-c", pairs[2, ])
  cm <- makeContrasts(contrasts = contrast_names, levels = design)
  fit2 <- eBayes(contrasts.fit(lmFit(expr, design, weights = w), cm))
  ava <- list()
  for (k in seq_along(contrast_names)) {
    tt <- topTable(fit2, coef = k, number = Inf, sort.by = "none")
    ava[[k]] <- data.frame(
      group1 = pairs[1, k], group2 = pairs[2, k], gene = rownames(tt), logFC = tt$logFC,
      t = tt$t, P.Value = tt$P.Value, adj.P.Val = tt$adj.P.Val)
  }
  write_table(do.call(rbind, ava), file.path(dir, paste0(name, "_r_ava_weighted.csv")))
}
