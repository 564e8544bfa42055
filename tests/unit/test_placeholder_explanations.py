"""Explanations that only say there is none yet are recognised as written and with their closing punctuation;
real explanations (even short ones) are not."""

from medtrain.data_prep.sources import is_placeholder_explanation


def test_placeholder_explanations_are_recognised_as_written_and_without_their_full_stop():
    for text in ("请等待更新", "请等待更新。", "暂无解析", " N/A ", "...", "-", "none"):
        assert is_placeholder_explanation(text), text
    for text in ("慢性阻塞性肺疾病的诊断需要肺功能检查。", "维生素C缺乏引起坏血病。", "略高于正常"):
        assert not is_placeholder_explanation(text), text
